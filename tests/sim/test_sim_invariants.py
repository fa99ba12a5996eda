"""Simulator invariants: determinism, conservation, bounded time, no wall-clock dependence."""

from __future__ import annotations

import time

import orjson
import pytest
from sim_helpers import Recorder, sim_config, workload

from ascendra_proxy.sim.report import run_document
from ascendra_proxy.sim.setup import make_policy
from ascendra_proxy.sim.simulator import Simulator
from loadgen.metrics import Outcome

ASCENDRA = {"type": "ascendra", "offload": {"infeasible": False}, "warming": {"enabled": True}}


def _json(policy: dict | None, seed: int, n: int = 80, rate: float = 20.0) -> bytes:
    result = Simulator(sim_config(policy), workload(n, rate), seed=seed).run()
    return orjson.dumps(run_document(result, {"seed": seed}, rate))


@pytest.mark.parametrize("policy", [None, {"type": "least_loaded"}, ASCENDRA])
def test_same_seed_gives_identical_json(policy: dict | None) -> None:
    a = _json(policy, seed=7)
    b = _json(policy, seed=7)
    assert a == b
    assert len(a) > 10_000  # the document holds per-request detail


def test_seed_changes_the_run() -> None:
    assert _json(None, seed=1) != _json(None, seed=2)


def test_results_do_not_depend_on_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _json(ASCENDRA, seed=5, n=40)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 123456.0)
    monkeypatch.setattr(time, "monotonic", lambda: 42.0)
    assert _json(ASCENDRA, seed=5, n=40) == before


@pytest.mark.parametrize("policy", [None, ASCENDRA])
def test_every_request_ends_exactly_once_and_engines_end_empty(policy: dict | None) -> None:
    cfg = sim_config(policy, num_gpu_blocks=900)  # KV tight enough to preempt
    items = workload(150, 30.0, disconnect=0.05)
    rec = Recorder(make_policy(cfg.proxy))
    sim = Simulator(cfg, items, seed=0, policy=rec)
    result = sim.run()
    finished = [c.args.id for c in rec.calls if c.kind == "finish"]
    assert sorted(finished) == sorted(f.id for f in result.flights)  # once each
    assert len(result.flights) == len(items)
    outcomes = {r.outcome for r in result.records}
    assert Outcome.UNFINISHED not in outcomes
    assert Outcome.DISCONNECTED in outcomes
    for f in result.flights:
        assert f.state.finished and f.attempt is None
        if f.record.outcome is Outcome.COMPLETED:
            assert f.record.tokens == f.item.output_tokens == len(f.generated)
    assert not sim.proxy.flights and not sim.proxy.held
    for b in result.backends:
        assert b.inflight == 0 and b.queued_prompt_tokens == 0 and not b.busy
        assert not b.engine.has_work()
        assert b.engine.num_free_blocks == b.engine.kv.num_blocks
        b.engine.kv.check_invariants()
    if policy is None:  # round robin piles requests on the engines: KV runs out
        assert sum(b.engine.stats().num_preemptions for b in result.backends) > 0


def test_the_run_stops_at_the_drain_timeout() -> None:
    # 1500 tokens at >= 10 ms per step take > 15 s: longer than the 5 s drain timeout.
    cfg = sim_config(sim={"drain_timeout_s": 5.0})
    items = workload(10, 5.0, prompt="fixed:500", output="fixed:1500")
    result = Simulator(cfg, items, seed=0).run()
    assert {r.outcome for r in result.records} == {Outcome.UNFINISHED}
    assert all(r.tokens > 0 for r in result.records)
    assert result.end_time <= items[-1].arrival_s + 5.0 + 1e-3


def test_a_small_run_is_fast() -> None:
    items = workload(300, 20.0)
    t0 = time.process_time()
    result = Simulator(sim_config(ASCENDRA), items, seed=0).run()
    assert time.process_time() - t0 < 15
    assert sum(r.outcome is Outcome.COMPLETED for r in result.records) == 300


def test_too_long_requests_fail_like_vllm() -> None:
    cfg = sim_config(max_model_len=1000)
    items = workload(20, 5.0, prompt="uniform:800:1200", output="fixed:100")
    result = Simulator(cfg, items, seed=0).run()
    for f in result.flights:
        too_long = f.item.prompt_tokens + f.item.output_tokens > 1000
        expected = Outcome.FAILED if too_long else Outcome.COMPLETED
        assert f.record.outcome is expected, f.item
        if too_long:
            assert f.record.error is not None and f.record.error.startswith("400")
