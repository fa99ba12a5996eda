"""round_robin: rotation order per model, skipping ineligible backends deterministically."""

from __future__ import annotations

import pytest
from core_builders import request, snapshot

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.policies.round_robin import RoundRobin

ABC = [snapshot("a"), snapshot("b"), snapshot("c")]


def picks(
    policy: RoundRobin,
    backends: list[BackendSnapshot],
    n: int,
    model: str = "m",
    exclude: frozenset[str] = frozenset(),
) -> list[str]:
    out = []
    for i in range(n):
        d = policy.route(request(f"r{i}", model=model), backends, float(i), exclude)
        assert isinstance(d, Dispatch), d
        assert d.reason == "round_robin" and d.priority is None
        out.append(d.backend)
    return out


@pytest.mark.parametrize(
    ("backends", "exclude", "expected"),
    [
        pytest.param(ABC, frozenset(), ["a", "b", "c", "a", "b", "c"], id="rotation"),
        pytest.param(
            [snapshot("a"), snapshot("b", healthy=False), snapshot("c")],
            frozenset(),
            ["a", "c", "a", "c"],
            id="skips-unhealthy",
        ),
        pytest.param(ABC, frozenset({"a"}), ["b", "c", "b", "c"], id="skips-excluded"),
        pytest.param(
            [snapshot("a"), snapshot("x", model="other"), snapshot("b")],
            frozenset(),
            ["a", "b", "a", "b"],
            id="skips-wrong-model",
        ),
        pytest.param(
            [snapshot("a", inflight=2, inflight_limit=2), snapshot("b"), snapshot("c")],
            frozenset(),
            ["b", "c", "b"],
            id="skips-full",
        ),
        pytest.param([snapshot("solo")], frozenset(), ["solo", "solo", "solo"], id="single"),
    ],
)
def test_order(
    backends: list[BackendSnapshot], exclude: frozenset[str], expected: list[str]
) -> None:
    assert picks(RoundRobin(), backends, len(expected), exclude=exclude) == expected


def test_each_model_has_its_own_rotation() -> None:
    backends = [snapshot("a1", model="A"), snapshot("b1", model="B"), snapshot("a2", model="A")]
    rr = RoundRobin()
    seq = []
    for i, model in enumerate(["A", "A", "B", "A", "B", "A"]):
        d = rr.route(request(f"r{i}", model=model), backends, 0.0)
        assert isinstance(d, Dispatch)
        seq.append(d.backend)
    assert seq == ["a1", "a2", "b1", "a1", "b1", "a2"]


def test_unhealthy_backend_does_not_disturb_the_others() -> None:
    rr = RoundRobin()
    assert picks(rr, ABC, 1) == ["a"]
    # b goes down: the next turn after a skips to c, then wraps to a.
    down = [snapshot("a"), snapshot("b", healthy=False), snapshot("c")]
    assert picks(rr, down, 2) == ["c", "a"]
    # b is back: rotation resumes after a.
    assert picks(rr, ABC, 3) == ["b", "c", "a"]


def test_vanished_last_choice_restarts_at_top() -> None:
    rr = RoundRobin()
    assert picks(rr, ABC, 2) == ["a", "b"]
    assert picks(rr, [snapshot("a"), snapshot("c")], 2) == ["a", "c"]


def test_two_instances_are_independent_and_deterministic() -> None:
    one, two = RoundRobin(), RoundRobin()
    assert picks(one, ABC, 5) == picks(two, ABC, 5) == ["a", "b", "c", "a", "b"]


@pytest.mark.parametrize(
    ("backends", "exclude", "expected"),
    [
        pytest.param([], frozenset(), Reject, id="no-backends"),
        pytest.param([snapshot("x", model="other")], frozenset(), Reject, id="model-not-served"),
        pytest.param([snapshot("a", healthy=False)], frozenset(), Reject, id="all-unhealthy"),
        pytest.param(ABC, frozenset({"a", "b", "c"}), Reject, id="all-excluded"),
        pytest.param([snapshot("a", inflight=1, inflight_limit=1)], frozenset(), Hold, id="full"),
    ],
)
def test_no_candidate_is_a_decision(
    backends: list[BackendSnapshot], exclude: frozenset[str], expected: type
) -> None:
    rr = RoundRobin()
    assert isinstance(rr.route(request(), backends, 0.0, exclude), expected)
    # ...and a later eligible request still starts the rotation at the top.
    assert picks(rr, ABC, 1) == ["a"]


def test_baseline_hooks_are_inert() -> None:
    rr = RoundRobin()
    assert rr.tick_interval_s is None
    assert rr.tick(0.0, [request()], ABC) == ()
    rr.on_finish(request(), 1.0)  # accepted, no effect on the rotation
    assert picks(rr, ABC, 2) == ["a", "b"]
