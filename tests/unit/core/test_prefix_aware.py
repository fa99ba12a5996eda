"""prefix_aware: weighted prefix-hit, queue and KV scores; the highest sum wins."""

from __future__ import annotations

from dataclasses import replace

import pytest
from core_builders import request, scraped, snapshot

from ascendra_proxy.configload import ConfigError, load
from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.policies.prefix_aware import (
    PrefixAware,
    PrefixAwareParams,
    score_backends,
)
from ascendra_proxy.core.request import RequestState

PROMPT_A = tuple(range(100, 116))  # 16 block hashes (chained hashes in real use)
PROMPT_B = tuple(range(200, 216))


def with_prompt(hashes: tuple[int, ...], rid: str = "r") -> RequestState:
    return replace(request(rid), prefix_hashes=hashes)


def route(policy: PrefixAware, req: RequestState, backends: list[BackendSnapshot]) -> str:
    d = policy.route(req, backends, 0.0)
    assert isinstance(d, Dispatch), d
    assert d.reason == "prefix_aware"
    return d.backend


def warmed(params: PrefixAwareParams, sent: dict[str, tuple[int, ...]]) -> PrefixAware:
    """A policy that already sent each prompt in ``sent`` to its backend."""
    policy = PrefixAware(params)
    for name, hashes in sent.items():
        assert route(policy, with_prompt(hashes), [snapshot(name)]) == name
    return policy


DEFAULT = PrefixAwareParams()


@pytest.mark.parametrize(
    ("params", "sent", "req", "backends", "expected"),
    [
        pytest.param(
            DEFAULT,
            {"b": PROMPT_A},
            PROMPT_A,
            [snapshot("a"), snapshot("b")],
            "b",
            id="full-hit-wins-at-equal-load",
        ),
        pytest.param(
            DEFAULT,
            {"b": PROMPT_A},
            PROMPT_A[:8] + PROMPT_B[:8],  # shares 8 of 16 blocks with what b holds
            [snapshot("a", inflight=1), snapshot("b", inflight=2)],
            # b: 3*0.5 + 2*0 + 2*0 = 1.5; a: 0 + 2*1 + 0 = 2.0
            "a",
            id="half-hit-loses-to-a-shorter-queue",
        ),
        pytest.param(
            DEFAULT,
            {"b": PROMPT_A},
            PROMPT_A,
            [snapshot("a", inflight=1), snapshot("b", inflight=2)],
            # b: 3*1 = 3.0; a: 2*1 = 2.0
            "b",
            id="full-hit-beats-a-shorter-queue",
        ),
        pytest.param(
            PrefixAwareParams(prefix_weight=1.0),
            {"b": PROMPT_A},
            PROMPT_A,
            [snapshot("a", inflight=1), snapshot("b", inflight=2)],
            "a",
            id="weights-decide",
        ),
        pytest.param(
            DEFAULT,
            {},
            (),
            [snapshot("a", scraped=scraped(kv=0.9)), snapshot("b", scraped=scraped(kv=0.3))],
            "b",
            id="no-hashes-more-free-kv",
        ),
        pytest.param(
            DEFAULT,
            {},
            (),
            [
                snapshot("a", scraped=scraped(kv=0.1, age=9.0)),
                snapshot("b", scraped=scraped(kv=0.5)),
            ],
            "b",
            id="stale-kv-scores-zero",
        ),
        pytest.param(
            DEFAULT,
            {},
            PROMPT_A,
            [snapshot("c"), snapshot("b"), snapshot("a")],
            "a",
            id="tie-by-name-not-order",
        ),
        pytest.param(
            DEFAULT,
            {"a": PROMPT_A},
            PROMPT_A,
            [snapshot("a", inflight=1, inflight_limit=1), snapshot("b", inflight=5)],
            "b",
            id="full-backend-not-eligible",
        ),
    ],
)
def test_choice(
    params: PrefixAwareParams,
    sent: dict[str, tuple[int, ...]],
    req: tuple[int, ...],
    backends: list[BackendSnapshot],
    expected: str,
) -> None:
    assert route(warmed(params, sent), with_prompt(req), backends) == expected


def test_scores_are_normalised() -> None:
    backends = [
        snapshot("a", inflight=0, scraped=scraped(kv=0.25)),
        snapshot("b", inflight=2),
        snapshot("c", inflight=4, scraped=scraped(kv=1.5)),
    ]
    s = score_backends(DEFAULT, backends, [0.0, 0.5, 1.0])
    assert [x.queue for x in s] == [1.0, 0.5, 0.0]
    assert [x.kv for x in s] == [0.75, 0.0, 0.0]
    assert [x.total for x in s] == [2 * 1.0 + 2 * 0.75, 3 * 0.5 + 2 * 0.5, 3 * 1.0]


def test_routing_records_the_prompt_on_the_chosen_backend() -> None:
    policy = PrefixAware(DEFAULT)
    first = route(policy, with_prompt(PROMPT_A, "r1"), [snapshot("a"), snapshot("b")])
    assert first == "a"  # tie, by name
    # The same prompt follows it, although the other backend is now less loaded.
    again = route(policy, with_prompt(PROMPT_A, "r2"), [snapshot("a", inflight=1), snapshot("b")])
    assert again == "a"
    other = route(policy, with_prompt(PROMPT_B, "r3"), [snapshot("a", inflight=1), snapshot("b")])
    assert other == "b"


def test_unhealthy_backend_forgets_its_prompts() -> None:
    policy = warmed(DEFAULT, {"a": PROMPT_A})
    down = [snapshot("a", healthy=False), snapshot("b", inflight=3)]
    assert route(policy, with_prompt(PROMPT_B, "x"), down) == "b"
    # Back up, empty cache: load decides again.
    assert route(policy, with_prompt(PROMPT_A), [snapshot("a", inflight=1), snapshot("b")]) == "b"


def test_no_candidate_answers_as_eligibility_says() -> None:
    policy = PrefixAware(DEFAULT)
    assert isinstance(policy.route(request(model="x"), [snapshot("a")], 0.0), Reject)
    full = [snapshot("a", inflight=1, inflight_limit=1)]
    assert isinstance(policy.route(request(), full, 0.0), Hold)


def test_params_reject_all_zero_weights() -> None:
    with pytest.raises(ConfigError, match="weight"):
        load(PrefixAwareParams, {"prefix_weight": 0, "queue_weight": 0, "kv_weight": 0}, "policy")
    with pytest.raises(ConfigError):
        load(PrefixAwareParams, {"prefix_weight": -1}, "policy")
