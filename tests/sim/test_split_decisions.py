"""The split topology makes the same decisions as the single process.

The simulator runs one trace twice: with the policy in-process, and with every policy call
crossing the worker <-> scheduler wire schema to the scheduler's state machine
(``LoopbackPolicy``).  Every route answer, every tick's actions and every request's timing
must be identical.
"""

from __future__ import annotations

from typing import Any

import pytest
from sim_helpers import Recorder, sim_config, workload

from ascendra_proxy.core.decisions import Hold, Move
from ascendra_proxy.scaleout.loopback import LoopbackPolicy
from ascendra_proxy.sim.setup import backend_infos, make_policy
from ascendra_proxy.sim.simulator import Simulator

POLICIES = {
    "ascendra": {"type": "ascendra", "offload": {"infeasible": False}},
    "ascendra-engine-priority": {"type": "ascendra", "lp_ordering": "engine_priority"},
    "ascendra-migrating": {"type": "ascendra", "migration": {"min_remaining_tokens": 4}},
    "least_loaded": {"type": "least_loaded"},
}


def _normal(result: Any) -> Any:
    return "hold" if isinstance(result, Hold) else result


def _run(policy: dict[str, Any], split: bool) -> tuple[Recorder, Any, LoopbackPolicy | None]:
    cfg = sim_config(policy, sim={"client_network_s": 0.0})
    inner = make_policy(cfg.proxy)
    loop = LoopbackPolicy(inner, backend_infos(cfg.proxy)) if split else None
    rec = Recorder(loop if loop is not None else inner)
    result = Simulator(cfg, workload(150, 60.0), seed=1, policy=rec).run()
    return rec, result, loop


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_same_trace_same_decisions_in_process_and_split(name: str) -> None:
    direct, d_result, _ = _run(POLICIES[name], split=False)
    split, s_result, loop = _run(POLICIES[name], split=True)
    assert loop is not None and loop.frames > 300  # the calls really crossed the wire
    assert len(direct.calls) == len(split.calls)
    for a, b in zip(direct.calls, split.calls, strict=True):
        assert (a.kind, a.now, _normal(a.result)) == (b.kind, b.now, _normal(b.result))
    timings = [(r.end_s, r.chunk_times, r.outcome) for r in d_result.records]
    assert timings == [(r.end_s, r.chunk_times, r.outcome) for r in s_result.records]
    if name == "ascendra":
        moves = [a for c in direct.calls if c.kind == "tick" for a in c.result or ()]
        assert any(isinstance(m, Move) for m in moves), "the trace should make the policy move"
