"""least_loaded: exact in-flight first, fresh scraped signals as tie-breaks, name last."""

from __future__ import annotations

import pytest
from core_builders import request, scraped, snapshot

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.policies.least_loaded import LeastLoaded, LeastLoadedParams

POLICY = LeastLoaded(LeastLoadedParams(max_scrape_age_s=1.0))


def choose(backends: list[BackendSnapshot], exclude: frozenset[str] = frozenset()) -> str:
    d = POLICY.route(request(), backends, 0.0, exclude)
    assert isinstance(d, Dispatch), d
    assert d.reason == "least_loaded"
    return d.backend


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        pytest.param(
            [snapshot("a", inflight=3), snapshot("b", inflight=1), snapshot("c", inflight=2)],
            "b",
            id="fewest-inflight",
        ),
        pytest.param(
            # In-flight beats any scraped signal, even a much shorter scraped queue.
            [
                snapshot("a", inflight=2, scraped=scraped(waiting=0)),
                snapshot("b", inflight=1, scraped=scraped(waiting=50)),
            ],
            "b",
            id="inflight-beats-scraped",
        ),
        pytest.param(
            [
                snapshot("a", inflight=1, scraped=scraped(waiting=4)),
                snapshot("b", inflight=1, scraped=scraped(waiting=2)),
            ],
            "b",
            id="tie-broken-by-waiting",
        ),
        pytest.param(
            [
                snapshot("a", scraped=scraped(waiting=1, running=9)),
                snapshot("b", scraped=scraped(waiting=1, running=3)),
            ],
            "b",
            id="then-running",
        ),
        pytest.param(
            [
                snapshot("a", scraped=scraped(kv=0.7)),
                snapshot("b", scraped=scraped(kv=0.2)),
            ],
            "b",
            id="then-kv-usage",
        ),
        pytest.param(
            [snapshot("b"), snapshot("c"), snapshot("a")],
            "a",
            id="full-tie-by-name-not-order",
        ),
        pytest.param(
            # A stale signal is unknown: the backend with a fresh (even busy) view wins the tie.
            [
                snapshot("a", scraped=scraped(waiting=0, age=5.0)),
                snapshot("b", scraped=scraped(waiting=3, age=0.2)),
            ],
            "b",
            id="stale-ranks-after-fresh",
        ),
        pytest.param(
            [snapshot("a"), snapshot("b", scraped=scraped(waiting=7))],
            "b",
            id="never-scraped-ranks-after-fresh",
        ),
        pytest.param(
            [
                snapshot("a", scraped=scraped(waiting=None, running=1)),
                snapshot("b", scraped=scraped(waiting=2, running=5)),
            ],
            "b",
            id="missing-gauge-ranks-after-known",
        ),
        pytest.param(
            # Both stale: scraped values are ignored entirely, so the name decides.
            [
                snapshot("b", scraped=scraped(waiting=0, age=9.0)),
                snapshot("a", scraped=scraped(waiting=9, age=9.0)),
            ],
            "a",
            id="both-stale-ignored",
        ),
        pytest.param(
            [
                snapshot("a", scraped=scraped(waiting=5, age=1.0)),
                snapshot("b", scraped=scraped(waiting=6, age=0.0)),
            ],
            "a",
            id="age-at-limit-is-fresh",
        ),
        pytest.param(
            [
                snapshot("a", healthy=False),
                snapshot("b", inflight=5),
                snapshot("c", model="other"),
            ],
            "b",
            id="only-eligible-considered",
        ),
    ],
)
def test_ordering(backends: list[BackendSnapshot], expected: str) -> None:
    assert choose(backends) == expected
    assert choose(list(reversed(backends))) == expected  # input order never matters


def test_excluded_and_full_are_skipped() -> None:
    backends = [
        snapshot("a", inflight=0),
        snapshot("b", inflight=1, inflight_limit=1),
        snapshot("c", inflight=4),
    ]
    assert choose(backends, frozenset({"a"})) == "c"


def test_detail_names_the_deciding_signal() -> None:
    d = POLICY.route(
        request(),
        [snapshot("a", scraped=scraped(waiting=3)), snapshot("b", scraped=scraped(waiting=1))],
        0.0,
    )
    assert isinstance(d, Dispatch) and d.detail == "lowest waiting"


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        pytest.param([snapshot("x", model="other")], Reject, id="unknown-model"),
        pytest.param([snapshot("a", healthy=False)], Reject, id="all-unhealthy"),
        pytest.param([snapshot("a", inflight=2, inflight_limit=2)], Hold, id="all-full"),
    ],
)
def test_no_candidate(backends: list[BackendSnapshot], expected: type) -> None:
    assert isinstance(POLICY.route(request(), backends, 0.0), expected)


def test_same_inputs_same_choice() -> None:
    backends = [snapshot(n, inflight=1) for n in "dcba"]
    assert {choose(backends) for _ in range(20)} == {"a"}
