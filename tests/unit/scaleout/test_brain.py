"""The scheduler's state machine: mirrors, counts, stale progress, departed workers."""

from __future__ import annotations

from ascendra_proxy.core.backend import BackendInfo, Role
from ascendra_proxy.core.decisions import Assign
from ascendra_proxy.core.policies.least_loaded import LeastLoadedParams
from ascendra_proxy.core.policies.registry import build_policy
from ascendra_proxy.core.request import Phase, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.scaleout.brain import Brain
from ascendra_proxy.scaleout.messages import (
    Finish,
    Hello,
    Progress,
    RouteAsk,
    progress_row,
    request_to_wire,
)

INFOS = [BackendInfo(f"b{i}", "main", Role.MIXED, "vllm", "m") for i in range(2)]


def _brain(limit: int | None = None) -> Brain:
    policy = build_policy("least_loaded", LeastLoadedParams(), INFOS)
    return Brain(policy, INFOS, epoch=7, inflight_limit=limit)


def _req(rid: str, arrival: float = 0.0) -> RequestState:
    return RequestState(rid, "m", 10, 5, SLO(1.0, 0.1), arrival=arrival)


def _inflight(brain: Brain, now: float = 0.0) -> dict[str, int]:
    return {s.name: s.inflight for s in brain.snapshots(now)}


def test_a_dispatch_counts_until_the_worker_acknowledges_it() -> None:
    brain = _brain()
    brain.connect("w", Hello("w", 0.0), 0.0)
    out = brain.on_message("w", RouteAsk(request_to_wire(_req("a")), []), 0.0)
    ((worker, msg),) = out
    assert worker == "w" and msg.epoch == 7 and isinstance(msg.action, Assign)
    target = msg.action.dispatch.backend
    assert _inflight(brain)[target] == 1  # not acknowledged: counted by the scheduler
    assert brain.mirrors["a"].phase is Phase.DISPATCHED
    # a progress frame sent before the worker applied the assign: counts 0, row still queued
    stale = progress_row(_req("a"))
    brain.on_message("w", Progress(0, {target: [0, 0]}, [], [stale]), 0.01)
    assert _inflight(brain)[target] == 1
    assert brain.mirrors["a"].phase is Phase.DISPATCHED  # the stale row was not applied
    brain.on_message("w", Progress(1, {target: [1, 10]}, [], []), 0.02)
    assert _inflight(brain)[target] == 1  # now the worker's own count, not twice


def test_the_second_request_sees_the_first_and_goes_elsewhere() -> None:
    brain = _brain()
    brain.connect("w1", Hello("w1", 0.0), 0.0)
    brain.connect("w2", Hello("w2", 0.0), 0.0)
    a = brain.on_message("w1", RouteAsk(request_to_wire(_req("a")), []), 0.0)
    b = brain.on_message("w2", RouteAsk(request_to_wire(_req("b")), []), 0.0)
    assert a[0][1].action.dispatch.backend != b[0][1].action.dispatch.backend  # type: ignore[union-attr]
    assert (a[0][0], b[0][0]) == ("w1", "w2")


def test_held_requests_are_decided_again_in_arrival_order_when_capacity_frees() -> None:
    brain = _brain(limit=1)
    brain.connect("w", Hello("w", 0.0), 0.0)
    for i, rid in enumerate(["a", "b", "c", "d"]):
        brain.on_message("w", RouteAsk(request_to_wire(_req(rid, arrival=i)), []), float(i))
    assert sorted(brain.held) == ["c", "d"]
    brain.on_message("w", Progress(2, {"b0": [1, 0], "b1": [1, 0]}, [], []), 4.0)
    brain.on_message("w", Finish("a", "completed", 4.0), 4.0)
    brain.on_message("w", Progress(2, {"b0": [0, 0], "b1": [1, 0]}, [], []), 4.0)
    out = brain.recheck(4.0)
    assert [m.action.request_id for _, m in out] == ["c"]  # type: ignore[union-attr]
    assert list(brain.held) == ["d"]


def test_a_worker_that_leaves_frees_its_requests_and_counts() -> None:
    brain = _brain()
    brain.connect("w1", Hello("w1", 0.0), 0.0)
    brain.connect("w2", Hello("w2", 0.0), 0.0)
    brain.on_message("w1", RouteAsk(request_to_wire(_req("a")), []), 0.0)
    brain.on_message("w2", RouteAsk(request_to_wire(_req("b")), []), 0.0)
    brain.on_message("w1", Progress(1, {"b0": [1, 10]}, ["b1"], []), 0.1)
    assert sum(_inflight(brain).values()) == 2
    assert not {s.name: s.healthy for s in brain.snapshots(0.1)}["b1"]
    brain.disconnect("w1", 0.2)
    assert set(brain.mirrors) == {"b"}
    assert sum(_inflight(brain).values()) == 1
    assert all(s.healthy for s in brain.snapshots(0.2))


def test_a_new_leader_rebuilds_from_hello_with_the_clock_offset() -> None:
    s = _req("run", arrival=100.0)
    s.on_dispatch(100.5, "b1")
    s.on_tokens(101.0, 2)
    waiting = _req("wait", arrival=101.5)
    brain = _brain()
    hello = Hello("w", 102.0, [[request_to_wire(waiting), ["b1"]]], [request_to_wire(s)])
    out = brain.connect("w", hello, 2.0)  # our clock is 100 s behind the worker's
    assert brain.mirrors["run"].first_token_at == 1.0 and brain.mirrors["run"].tokens == 2
    ((_, msg),) = out
    assert msg.action.dispatch.backend == "b0"  # type: ignore[union-attr]  # b1 excluded
    assert brain.mirrors["wait"].arrival == 1.5
