"""The analytical slack predictor: arithmetic on a round-number profile, and its monotonicity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from asc_world import LinearProfile, StubPredictor, World, info, place, request
from hypothesis import given
from hypothesis import strategies as st

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.predict import (
    AnalyticalPredictor,
    BackendFeatures,
    PredictionQuery,
    QueryBatch,
)

# step = 10 ms + 0.05 ms per token in the step; budget 1000 tokens
IDLE = BackendFeatures(
    name="b",
    role="lp",
    profile="lin",
    inflight=0,
    unstarted=0,
    unstarted_tokens=0,
    decode_seqs=0,
    decode_context_tokens=0,
    running=None,
    waiting=None,
    kv_usage=None,
    scrape_age_s=None,
    recent_step_s=None,
    max_num_seqs=256,
    max_num_batched_tokens=1000,
)


def ask(
    f: BackendFeatures,
    prompt: int,
    *,
    gen: int = 0,
    ahead: int = 0,
    cached: int = 0,
    resident: bool = False,
    horizon: int = 10,
) -> tuple[float, float]:
    p = AnalyticalPredictor({"lin": LinearProfile()})
    q = PredictionQuery(0, prompt, gen, 0.0, ahead, cached, resident)
    out = p.predict(QueryBatch.from_rows([f], [q], horizon))
    assert out.source == "analytical"
    return float(out.ttft_s[0]), float(out.next_k_s[0])


def test_idle_backend_ttft_is_half_a_step_plus_the_chunked_prefill() -> None:
    # 1500 tokens = one full step (1000) + one step of 500; s_dec = 10 ms, s_mix = 60 ms
    ttft, next_k = ask(IDLE, 1500)
    assert ttft == pytest.approx(0.005 + 0.060 + (0.010 + 500 * 0.00005))
    assert next_k == pytest.approx(10 * 0.010)  # nothing queued behind: decode-only steps


@pytest.mark.parametrize(
    ("ahead", "cached", "expected_prefill"),
    [
        (0, 0, 0.010 + 400 * 0.00005),  # 400 tokens: one partial step
        (600, 0, 0.060),  # 1000 tokens: one full step
        (1600, 0, 0.060 * 2),  # 2000 tokens
        (600, 300, 0.010 + 700 * 0.00005),  # the cache hit is not prefilled
    ],
)
def test_queue_ahead_and_cache_hit(ahead: int, cached: int, expected_prefill: float) -> None:
    ttft, _ = ask(IDLE, 400, ahead=ahead, cached=cached)
    assert ttft == pytest.approx(0.005 + expected_prefill)


def test_resident_stream_waits_half_a_step_and_decodes_behind_queued_prefill() -> None:
    busy = replace(
        IDLE, unstarted=2, unstarted_tokens=2000, decode_seqs=4, decode_context_tokens=4000
    )
    ttft, next_k = ask(busy, 500, gen=20, resident=True)
    s_mix = 0.010 + 0.00005 * 1000  # budget 1000 = 996 prefill + 4 decodes
    s_dec = 0.010 + 0.00005 * 4
    assert ttft == pytest.approx(0.5 * s_mix)
    # 2000 queued tokens at 996 per step: 2 full + 1 tiny mixed step, then 7 decode steps
    assert next_k == pytest.approx(2 * s_mix + (s_dec + 8 * 0.00005) + 7 * s_dec, rel=1e-3)


def test_continuation_reprefills_prompt_plus_generated() -> None:
    fresh, _ = ask(IDLE, 500)
    cont, _ = ask(IDLE, 500, gen=500)
    assert cont > fresh
    assert cont == pytest.approx(0.005 + 0.060)


def test_scraped_waiting_beyond_the_proxy_count_adds_work_when_fresh() -> None:
    base, _ = ask(IDLE, 500)
    fresh = replace(IDLE, waiting=3, running=0, scrape_age_s=0.5)
    stale = replace(fresh, scrape_age_s=10.0)
    assert ask(fresh, 500)[0] > base
    assert ask(stale, 500)[0] == pytest.approx(base)


# four slots, all held by streams with 300, 50, 900 and 2000 tokens left to generate
FULL = replace(
    IDLE,
    inflight=4,
    decode_seqs=4,
    decode_context_tokens=400,
    max_num_seqs=4,
    stream_remaining=(50, 300, 900, 2000),
)
S_DEC_4 = 0.010 + 0.00005 * 4  # decode step of the four streams
OWN_400 = S_DEC_4 + 400 * 0.00005  # its own prefill: one step with the four decodes


def test_a_full_engine_makes_a_new_request_wait_for_the_first_slot_to_free() -> None:
    ttft, _ = ask(FULL, 400)
    assert ttft == pytest.approx(0.5 * S_DEC_4 + 50 * S_DEC_4 + OWN_400)
    # one free slot: no wait beyond the prefill
    roomy = replace(FULL, max_num_seqs=5)
    assert ask(roomy, 400)[0] == pytest.approx(0.5 * S_DEC_4 + OWN_400)


def test_requests_queued_ahead_take_the_earlier_slots() -> None:
    # two 400-token prompts queued ahead: the request gets the third slot to free (900 left)
    queued = replace(FULL, inflight=6, unstarted=2, unstarted_tokens=800)
    ttft, _ = ask(queued, 400, ahead=800)
    s_mix = 0.010 + 0.00005 * 1000
    assert ttft == pytest.approx(0.5 * s_mix + 900 * S_DEC_4 + OWN_400)


def test_streams_unknown_to_the_proxy_free_no_sooner_than_the_longest_known() -> None:
    scraped = replace(FULL, running=6, scrape_age_s=0.1, max_num_seqs=6)  # two unknown
    s_dec_6 = 0.010 + 0.00005 * 6
    own = s_dec_6 + 400 * 0.00005
    ttft, _ = ask(scraped, 400)
    assert ttft == pytest.approx(0.5 * s_dec_6 + 50 * s_dec_6 + own)
    # three queued ahead of it, itself the 4th to need a slot: only four streams are known,
    # so the 4th slot frees when the longest known stream (2000 left) ends
    crowded = replace(scraped, running=9, inflight=9, unstarted=3, unstarted_tokens=1200)
    ttft, _ = ask(crowded, 400, ahead=1200)
    s_mix = 0.010 + 0.00005 * 1000
    assert ttft == pytest.approx(0.5 * s_mix + 2000 * s_dec_6 + own)
    unknown = replace(FULL, stream_remaining=())
    assert ask(unknown, 400)[0] == pytest.approx(ask(replace(FULL, max_num_seqs=5), 400)[0])


def test_a_resident_stream_never_waits_for_a_slot() -> None:
    assert ask(FULL, 400, gen=10, resident=True)[0] == pytest.approx(0.5 * S_DEC_4)


def test_without_a_profile_every_step_costs_the_observed_step() -> None:
    f = replace(IDLE, profile="unknown", recent_step_s=0.05)
    ttft, next_k = ask(f, 2500)  # three steps of <= 1000 tokens
    assert ttft == pytest.approx(0.025 + 3 * 0.05)
    assert next_k == pytest.approx(10 * 0.05)
    g = replace(f, recent_step_s=None)
    assert ask(g, 2500)[0] == pytest.approx(0.015 + 3 * 0.03)  # fallback_step_s


def test_isolated_prefill_is_the_papers_est_prefill() -> None:
    p = AnalyticalPredictor({"lin": LinearProfile()}, fallback_step_s=0.02)
    assert p.isolated_prefill_s("lin", 1500, 1000) == pytest.approx(0.060 + 0.035)
    assert p.isolated_prefill_s("none", 1500, 1000) == pytest.approx(0.04)


@given(
    prompt=st.integers(1, 8000),
    ahead=st.integers(0, 20000),
    more=st.integers(1, 5000),
    cached=st.integers(0, 8000),
)
def test_more_work_ahead_never_predicts_sooner(
    prompt: int, ahead: int, more: int, cached: int
) -> None:
    cached = min(cached, prompt)
    assert (
        ask(IDLE, prompt, ahead=ahead + more, cached=cached)[0]
        >= ask(IDLE, prompt, ahead=ahead, cached=cached)[0]
    )
    assert ask(IDLE, prompt, ahead=ahead)[0] >= ask(IDLE, prompt, ahead=ahead, cached=cached)[0]


def test_batch_rows_round_trip_and_empty_batch() -> None:
    q = PredictionQuery(0, 10, 2, 0.5, 7, 3, True)
    batch = QueryBatch.from_rows([IDLE], [q, q], 4)
    assert len(batch) == 2
    assert batch.row(1) == q
    empty = AnalyticalPredictor({}).predict(QueryBatch.from_rows([IDLE], [], 4))
    assert empty.ttft_s.shape == (0,) and np.all(empty.next_k_s == 0)


def test_the_tick_passes_dispatch_times_and_slos_to_the_predictor() -> None:
    """What the learned model reads: seconds on the backend per row, the oldest not-started
    request's wait and the last first token per backend, the TTFT SLO per row."""
    stub = StubPredictor({"lp0": 0.05, "hp0": 0.05})
    w = World([info("lp0", Role.LP), info("hp0", Role.HP)], predictor=stub)
    place(w, request("a", arrival=0.0), "lp0", 0.1)
    place(w, request("b", arrival=0.0), "lp0", 0.3)
    streaming = place(w, request("c", arrival=0.0), "lp0", 0.0)
    streaming.on_tokens(0.2, 1)
    w.tick(0.5)
    batch = stub.batches[0]
    lp = batch.backends[[f.name for f in batch.backends].index("lp0")]
    assert lp.oldest_unstarted_s == pytest.approx(0.4)  # "a", sent at 0.1
    assert lp.last_first_token_s == pytest.approx(0.3)  # "c", first token at 0.2
    assert batch.on_backend_s is not None and batch.slo_ttft_s is not None
    assert sorted(batch.on_backend_s.tolist()) == pytest.approx([0.2, 0.4, 0.5])
    assert batch.slo_ttft_s.tolist() == pytest.approx([1.0, 1.0, 1.0])
