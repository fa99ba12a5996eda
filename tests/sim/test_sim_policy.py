"""The simulator drives the policy faithfully: same decisions as a direct call, applied as
decided, with the proxy's exact counts and stale scrapes; moves are token-exact."""

from __future__ import annotations

from collections.abc import Sequence

from sim_helpers import Recorder, Scripted, sim_config, workload

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Action, Assign, Dispatch, Move, Warm
from ascendra_proxy.core.request import Phase, RequestState
from ascendra_proxy.sim.setup import make_policy
from ascendra_proxy.sim.simulator import Simulator
from loadgen.metrics import Outcome

ASCENDRA = {"type": "ascendra", "offload": {"infeasible": False}}


def _recorded_run(policy: dict, n: int = 150, rate: float = 60.0) -> tuple[Recorder, object]:
    cfg = sim_config(policy)
    rec = Recorder(make_policy(cfg.proxy))
    result = Simulator(cfg, workload(n, rate), seed=1, policy=rec).run()
    return rec, result


def test_decisions_equal_a_direct_call_on_the_same_inputs() -> None:
    rec, _ = _recorded_run(ASCENDRA)
    fresh = make_policy(sim_config(ASCENDRA).proxy)
    kinds = {"route": 0, "tick": 0}
    for call in rec.calls:
        if call.kind == "route":
            req, snaps, exclude = call.args
            assert fresh.route(req, snaps, call.now, exclude) == call.result
        elif call.kind == "tick":
            reqs, snaps = call.args
            assert list(fresh.tick(call.now, reqs, snaps)) == call.result
        else:
            fresh.on_finish(call.args, call.now)
        kinds[call.kind] = kinds.get(call.kind, 0) + 1
    assert kinds["route"] >= 120 and kinds["tick"] > 100
    moves = [a for c in rec.calls if c.kind == "tick" for a in c.result if isinstance(a, Move)]
    assert moves, "the workload should make the policy offload"


def test_every_decision_is_carried_out() -> None:
    rec, result = _recorded_run(ASCENDRA)
    expected: dict[str, list[str]] = {}
    for call in rec.calls:
        if call.kind == "route" and isinstance(call.result, Dispatch):
            expected.setdefault(call.args[0].id, []).append(call.result.backend)
        elif call.kind == "tick":
            for a in call.result:
                if isinstance(a, Assign | Move):
                    expected.setdefault(a.request_id, []).append(a.dispatch.backend)
    assert not result.tally.skipped  # nothing the policy said was ignored
    for f in result.flights:
        assert f.route == expected[f.id]
        moves = [e for e in f.events if e["kind"] in ("offload", "migration")]
        from_backend = [e for e in moves if e["from"] is not None]  # else from the proxy queue
        assert len(from_backend) == len(f.route) - 1
        assert [e["to"] for e in moves] == f.route[len(f.route) - len(moves) :]


class _CountsChecker(Scripted):
    """Checks, at every tick, the snapshots against the requests the driver lists."""

    def __init__(self, interval: float, hop: float) -> None:
        super().__init__("lp-0")
        self.limit = interval + hop + 1e-9
        self.ages: list[float] = []
        self.checked = 0

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Dispatch:
        names = [b.name for b in backends]
        return Dispatch(names[int(req.id.split("-")[1]) % len(names)], "spread")

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        for b in backends:
            mine = [r for r in requests if r.backend == b.name and r.phase is not Phase.QUEUED]
            assert b.inflight == len(mine)
            waiting = sum(r.prompt_tokens for r in mine if r.phase is Phase.DISPATCHED)
            assert b.queued_prompt_tokens == waiting
            if b.scraped is not None:
                assert 0 <= b.scraped.age_s <= self.limit
                self.ages.append(b.scraped.age_s)
        self.checked += 1
        return ()


def test_snapshots_carry_exact_counts_and_scrape_age() -> None:
    cfg = sim_config(sim={"network_s": 0.001})
    checker = _CountsChecker(cfg.proxy.scrape.interval_s, 0.001)
    Simulator(cfg, workload(80, 20.0), seed=0, policy=checker).run()
    assert checker.checked > 50
    assert max(checker.ages) > 0.4  # stale signals are labelled as such, not hidden
    assert min(checker.ages) < 0.05


def test_offload_before_the_first_token_keeps_the_original_arrival() -> None:
    cfg = sim_config()
    items = workload(30, 5.0)
    plain = Simulator(cfg, items, seed=0, policy=Scripted("lp-0")).run()
    moved = Simulator(cfg, items, seed=0, policy=Scripted("lp-0", ("offload", 0, "hp-0"))).run()
    for a, b in zip(plain.flights, moved.flights, strict=True):
        assert b.route == ["lp-0", "hp-0"]
        assert b.record.outcome is Outcome.COMPLETED
        assert b.record.arrival_s == a.record.arrival_s
        ev = b.events[0]
        assert ev["kind"] == "offload" and ev["from"] == "lp-0" and ev["to"] == "hp-0"
        assert ev["tokens"] == 0
        # the first token came after the offload: TTFT counts the time spent on lp-0
        assert b.record.chunk_times[0] > ev["t"]
        assert b.generated == a.generated
    assert moved.tally.offloads == {"scripted_offload": 30}
    lp0 = moved.backends[0].engine
    assert lp0.num_free_blocks == lp0.kv.num_blocks


def test_migration_is_a_token_exact_continuation() -> None:
    cfg = sim_config()
    items = workload(30, 5.0, output="uniform:40:120")
    plain = Simulator(cfg, items, seed=4, policy=Scripted("lp-0")).run()
    moved = Simulator(cfg, items, seed=4, policy=Scripted("lp-0", ("migrate", 10, "hp-0"))).run()
    assert moved.tally.migrations == {"scripted_migrate": 30}
    for a, b in zip(plain.flights, moved.flights, strict=True):
        assert b.route == ["lp-0", "hp-0"]
        assert b.generated == a.generated  # same ids, none lost, none repeated
        assert b.record.tokens == b.item.output_tokens
        ev = b.events[0]
        assert ev["kind"] == "migration" and ev["tokens"] >= 10
        assert b.state.moves == 1
    hp = moved.backends[2].engine.stats()
    assert hp.prompt_tokens_total > sum(f.item.prompt_tokens for f in moved.flights)
    # the KV lp-0 had computed (prompt + >= 10 generated tokens each) was thrown away
    thrown = sum(f.item.prompt_tokens + 10 for f in moved.flights)
    assert moved.tally.aborted_computed["migration"] >= thrown
    assert set(moved.tally.aborted_computed) == {"migration"}


class _WarmThenOffload(Scripted):
    """Warms every request on hp-0 at its first tick, offloads it 0.3 s after arrival."""

    def __init__(self) -> None:
        super().__init__("lp-0")
        self.warmed: set[str] = set()

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        out: list[Action] = []
        for r in requests:
            if r.id not in self.warmed:
                self.warmed.add(r.id)
                out.append(Warm(r.id, "hp-0", "scripted_warm"))
            elif r.id not in self.moved and now - r.arrival > 0.3 and not r.started:
                self.moved.add(r.id)
                out.append(Move(r.id, Dispatch("hp-0", "scripted_offload"), "offload"))
        return out


def test_warm_fills_the_target_cache_and_is_not_a_request() -> None:
    cfg = sim_config(max_num_seqs=2)  # lp-0 queues, so requests wait long enough to move
    items = workload(20, 10.0, prompt="uniform:800:1500")
    result = Simulator(cfg, items, seed=0, policy=_WarmThenOffload()).run()
    assert result.tally.warms == {"scripted_warm": 20}
    assert all(r.outcome is Outcome.COMPLETED for r in result.records)
    hp = result.backends[2].engine.stats()
    offloaded = [f for f in result.flights if f.route == ["lp-0", "hp-0"]]
    assert offloaded
    assert hp.prefix_cache_hits >= sum(f.item.prompt_tokens // 2 for f in offloaded)
