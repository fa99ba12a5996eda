"""The HP ticket rule [paper] and HP admission of migrated streams, table-driven."""

from __future__ import annotations

import pytest
from asc_world import facts, scraped

from ascendra_proxy.core.backend import BackendSnapshot, Role, ScrapedLoad
from ascendra_proxy.core.policies.ascendra.hp import accepts_migration, pick, ticket_refusal
from ascendra_proxy.core.policies.ascendra.params import TicketParams
from ascendra_proxy.core.policies.ascendra.view import BackendState


def hp(
    inflight: int = 0, queued: int = 0, s: ScrapedLoad | None = None, max_seqs: int = 128
) -> BackendState:
    snap = BackendSnapshot(
        name="hp0",
        pool="hp",
        role=Role.HP,
        engine="vllm",
        model="m",
        healthy=True,
        inflight=inflight,
        queued_prompt_tokens=queued,
        scraped=s,
        max_num_seqs=max_seqs,
    )
    return BackendState.of(snap, facts(max_num_seqs=max_seqs), Role.HP, False)


@pytest.mark.parametrize(
    ("state", "refusal"),
    [
        (hp(), None),
        (hp(inflight=63), None),  # 63 < 128 / 2
        (hp(inflight=64), "running_high"),  # the paper: running < max_num_seqs / 2
        (hp(inflight=1, queued=500), "queue_not_empty"),  # a request waits for its prefill
        (hp(s=scraped(waiting=1)), "engine_waiting"),
        (hp(s=scraped(running=64)), "running_high"),  # scraped running counts too
        (hp(s=scraped(kv=0.89)), None),  # 11% free
        (hp(s=scraped(kv=0.90)), "kv_low"),  # the paper: more than 10% free
        (hp(s=scraped(waiting=None, running=None, kv=None)), None),  # unknown gauges
        (hp(s=scraped(waiting=5, running=100, kv=0.99, age=10.0)), None),  # stale scrape
    ],
)
def test_ticket_rule(state: BackendState, refusal: str | None) -> None:
    assert ticket_refusal(state, TicketParams(), max_age_s=2.0) == refusal


def test_ticket_thresholds_are_configurable() -> None:
    p = TicketParams(running_frac=0.25, kv_free=0.5)
    assert ticket_refusal(hp(inflight=32), p, 2.0) == "running_high"
    assert ticket_refusal(hp(s=scraped(kv=0.5)), p, 2.0) == "kv_low"
    assert ticket_refusal(hp(inflight=31, s=scraped(kv=0.4)), p, 2.0) is None


@pytest.mark.parametrize(
    ("state", "ok"),
    [
        (hp(inflight=95), True),  # below 0.75 * 128
        (hp(inflight=96), False),
        (hp(inflight=10, queued=4000), True),  # queued prefill does not block a migration
        (hp(s=scraped(kv=0.95)), False),
    ],
)
def test_hp_accepts_migration(state: BackendState, ok: bool) -> None:
    assert accepts_migration(state, 0.75, 0.10, 2.0) is ok


def test_pick_prefers_least_predicted_then_most_cached_then_first() -> None:
    a, b, c = hp(), hp(), hp()
    assert pick([a, b, c], [0.3, 0.2, 0.2], [0, 0, 0]) == 1
    assert pick([a, b, c], [0.2, 0.2, 0.2], [0, 16, 32]) == 2
    assert pick([a, b, c], [0.2, 0.2, 0.2], [16, 16, 16]) == 0
