"""Which filter emptied the candidate set decides the answer (and its status / reason)."""

from __future__ import annotations

import pytest
from core_builders import snapshot

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Hold, Reject
from ascendra_proxy.core.policies.eligibility import eligible


@pytest.mark.parametrize(
    ("backends", "exclude", "status", "reason"),
    [
        pytest.param([], frozenset(), 404, "unknown_model", id="nothing"),
        pytest.param([snapshot("a", model="z")], frozenset(), 404, "unknown_model", id="other"),
        pytest.param(
            [snapshot("a", healthy=False), snapshot("b", healthy=False)],
            frozenset(),
            503,
            "no_healthy_backend",
            id="unhealthy",
        ),
        pytest.param(
            [snapshot("a"), snapshot("b", healthy=False)],
            frozenset({"a"}),
            503,
            "all_excluded",
            id="excluded",
        ),
    ],
)
def test_rejects(
    backends: list[BackendSnapshot], exclude: frozenset[str], status: int, reason: str
) -> None:
    got = eligible("m", backends, exclude)
    assert isinstance(got, Reject)
    assert (got.status, got.reason) == (status, reason)
    assert "'m'" in got.message


def test_full_backends_hold() -> None:
    got = eligible("m", [snapshot("a", inflight=3, inflight_limit=3)], frozenset())
    assert isinstance(got, Hold) and got.reason == "all_backends_full"


def test_keeps_input_order() -> None:
    backends = [snapshot("c"), snapshot("x", healthy=False), snapshot("a"), snapshot("b")]
    got = eligible("m", backends, frozenset())
    assert isinstance(got, list)
    assert [b.name for b in got] == ["c", "a", "b"]
