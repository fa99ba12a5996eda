"""Invariants under random arrivals, ticks, tokens, finishes and failures (hypothesis).

A small driver carries out every decision like the proxy does and checks, at every step:
a request gets at most one dispatching action per tick and only in a phase where it makes
sense (Assign: held; offload Move: no token yet; migrate Move: streaming); the policy's held
queue is EDF-ordered and holds exactly the driver's queued requests; the policy tracks
exactly the live requests; every request ends exactly once and leaves no trace; and the
same inputs give the same actions.
"""

from __future__ import annotations

from dataclasses import dataclass

from asc_world import SLO_1S, World, lp_hp, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ascendra_proxy.core.decisions import Assign, Dispatch, Hold, Move, Reject
from ascendra_proxy.core.policies.ascendra import SetRole, Warm
from ascendra_proxy.core.policies.ascendra.params import (
    AdaptiveRoleParams,
    AscendraParams,
    WarmingParams,
)
from ascendra_proxy.core.request import Outcome, Phase
from ascendra_proxy.core.slo import SLO

SLOS = [SLO_1S, SLO(0.5, 0.1), SLO(3.0, 0.2)]
ALIVE = (Phase.QUEUED, Phase.DISPATCHED, Phase.STREAMING)


@dataclass(frozen=True)
class Op:
    kind: str  # arrive | tick | tokens | finish | health | reroute
    a: int = 0
    b: int = 0
    c: int = 0
    dt: float = 0.0


ops = st.one_of(
    st.builds(Op, st.just("arrive"), st.integers(16, 4000), st.integers(0, 2), st.integers(0, 3)),
    st.builds(Op, st.just("tick"), dt=st.floats(0.001, 0.3)),
    st.builds(Op, st.just("tokens"), st.integers(0, 10_000), st.integers(1, 3)),
    st.builds(Op, st.just("finish"), st.integers(0, 10_000)),
    st.builds(Op, st.just("health"), st.integers(0, 2), st.integers(0, 1)),
    st.builds(Op, st.just("reroute"), st.integers(0, 10_000)),
)

PARAMS = [
    AscendraParams(),
    AscendraParams(lp_ordering="engine_priority"),
    AscendraParams(
        roles="adaptive",
        adaptive=AdaptiveRoleParams(hold_s=0.0, cooldown_s=0.5, drain_timeout_s=1.0),
        warming=WarmingParams(enabled=True),
    ),
]


class Driver:
    def __init__(self, params: AscendraParams) -> None:
        self.w = World(lp_hp(2, 1, max_num_seqs=8), params=params)
        self.now = 0.0
        self.n = 0
        self.log: list[tuple[str, object, object]] = []
        self.ended: dict[str, int] = {}

    def live(self) -> list[str]:
        return sorted(k for k, r in self.w.reqs.items() if not r.finished)

    def pick(self, i: int, phases: tuple[Phase, ...]) -> str | None:
        ids = [k for k in self.live() if self.w.reqs[k].phase in phases]
        return ids[i % len(ids)] if ids else None

    def end(self, rid: str, outcome: Outcome) -> None:
        r = self.w.reqs[rid]
        if r.finish(self.now, outcome):
            self.w.policy.on_finish(r, self.now)
            self.ended[rid] = self.ended.get(rid, 0) + 1

    def route(self, rid: str, exclude: frozenset[str] = frozenset()) -> None:
        r = self.w.reqs[rid]
        d = self.w.policy.route(r, self.w.snapshots(), self.now, exclude)
        self.log.append(("route", rid, d))
        if isinstance(d, Dispatch):
            if r.tokens == 0 and r.phase is Phase.DISPATCHED:
                r.on_requeue()
            r.on_dispatch(self.now, d.backend)
        elif isinstance(d, Reject):
            self.end(rid, Outcome.REJECTED)
        else:
            assert isinstance(d, Hold)
            assert r.tokens == 0

    def step(self, o: Op) -> None:
        rid: str | None
        if o.kind == "arrive":
            rid = f"r{self.n}"
            self.n += 1
            prefix = tuple(range(o.c * 1000, o.c * 1000 + o.a // 16)) if o.c else ()
            r = request(
                rid, arrival=self.now, prompt=o.a, max_tokens=40, slo=SLOS[o.b], prefix=prefix
            )
            self.w.reqs[rid] = r
            self.route(rid)
        elif o.kind == "tick":
            self.now += o.dt
            self.tick()
        elif o.kind == "tokens":
            rid = self.pick(o.a, (Phase.DISPATCHED, Phase.STREAMING))
            if rid is not None:
                r = self.w.reqs[rid]
                r.on_tokens(self.now, o.b)
                if r.tokens >= r.max_tokens:
                    self.end(rid, Outcome.COMPLETED)
        elif o.kind == "finish":
            rid = self.pick(o.a, ALIVE)
            if rid is not None:
                self.end(rid, Outcome.CLIENT_DISCONNECTED)
        elif o.kind == "health":
            self.w.healthy[["lp0", "lp1", "hp0"][o.a]] = bool(o.b)
        elif o.kind == "reroute":  # the driver saw a backend fail it, or re-asks a held one
            rid = self.pick(o.a, ALIVE)
            if rid is not None:
                backend = self.w.reqs[rid].backend
                self.route(rid, frozenset({backend}) if backend else frozenset())

    def tick(self) -> None:
        live = [self.w.reqs[k] for k in self.live()]
        actions = list(self.w.policy.tick(self.now, live, self.w.snapshots()))
        self.log.append(("tick", round(self.now, 9), actions))
        dispatched: set[str] = set()
        for a in actions:
            if isinstance(a, SetRole):
                continue
            r = self.w.reqs[a.request_id]
            assert not r.finished, a
            if isinstance(a, Warm):
                continue
            assert isinstance(a, Assign | Move), a
            assert a.request_id not in dispatched, f"two dispatches in one tick: {a}"
            dispatched.add(a.request_id)
            if isinstance(a, Assign):
                assert r.phase is Phase.QUEUED, a
            elif a.kind == "offload":
                assert r.tokens == 0 and r.phase in (Phase.QUEUED, Phase.DISPATCHED), a
                assert a.dispatch.backend != r.backend, a
                if r.phase is Phase.DISPATCHED:
                    r.on_requeue()
            else:
                assert r.phase is Phase.STREAMING and a.dispatch.backend != r.backend, a
            r.on_dispatch(self.now, a.dispatch.backend)
        self.check()

    def check(self) -> None:
        pol = self.w.policy
        keys = pol._held.keys()
        assert keys == sorted(keys)
        queued = {k for k in self.live() if self.w.reqs[k].phase is Phase.QUEUED}
        assert set(pol.held_ids()) == queued
        assert pol.status()["tracked"] == len(self.live())

    def close(self) -> None:
        for rid in self.live():
            self.end(rid, Outcome.COMPLETED)
        assert all(n == 1 for n in self.ended.values())
        assert len(self.ended) == len(self.w.reqs)
        assert self.w.policy.status()["held"] == 0
        assert self.w.policy.status()["tracked"] == 0


def run(params: AscendraParams, script: list[Op]) -> list[tuple[str, object, object]]:
    d = Driver(params)
    for o in script:
        d.step(o)
    d.tick()
    d.close()
    return d.log


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.integers(0, len(PARAMS) - 1), script=st.lists(ops, max_size=80))
def test_invariants_hold_and_runs_are_deterministic(mode: int, script: list[Op]) -> None:
    first = run(PARAMS[mode], script)
    assert run(PARAMS[mode], script) == first


def test_a_busy_run_exercises_every_action_kind() -> None:
    """The random driver is not vacuous: fixed heavy runs offload, hold, assign and warm
    (warm-ups go only to an HP with nothing waiting: the second run lets HP's work start)."""
    kinds: set[str] = set()
    for start_hp_work in (False, True):
        script: list[Op] = []
        for i in range(60):
            script.append(Op("arrive", 1500 + 37 * i, i % 3, i % 4))
            script.append(Op("tick", dt=0.02))
            if i % 3 == 0:
                script.append(Op("tokens", i, 1))
            if start_hp_work and i % 4 == 3:
                script += [Op("tokens", k, 1) for k in range(12)]
        for what, _, out in run(PARAMS[2], script):
            if what == "route":
                kinds.add(type(out).__name__)
            else:
                assert isinstance(out, list)
                kinds.update(a.kind if isinstance(a, Move) else type(a).__name__ for a in out)
    assert {"Dispatch", "Hold", "Assign", "offload", "Warm"} <= kinds, kinds
