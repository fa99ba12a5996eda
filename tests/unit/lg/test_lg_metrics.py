"""Metric definitions on hand-built streams: known gaps give known values and attainment."""

from __future__ import annotations

import pytest

from loadgen.metrics import Outcome, RequestRecord, attained, capacity_at, summarize
from loadgen.report import format_summary, format_sweep
from loadgen.results import record_from_dict, record_to_dict


def rec(
    index: int = 0,
    arrival: float = 0.0,
    chunks: list[tuple[float, int]] | None = None,
    end: float | None = None,
    outcome: Outcome = Outcome.COMPLETED,
    slo: tuple[float, float] = (1.0, 0.15),
) -> RequestRecord:
    r = RequestRecord(index, arrival, 100, 10, slo[0], slo[1], sent_s=arrival, outcome=outcome)
    for t, n in chunks or []:
        r.add_chunk(t, n)
    r.end_s = end if end is not None else (r.chunk_times[-1] if r.chunk_times else None)
    return r


def test_single_stream_ttft_tbt_tpot_e2e_and_gaps() -> None:
    r = rec(arrival=1.0, chunks=[(1.5, 1), (1.6, 1), (1.7, 1), (1.8, 1), (1.9, 1)], end=1.95)
    assert r.ttft_s == pytest.approx(0.5)
    assert r.tokens == 5
    assert r.tbt_mean_s == pytest.approx(0.1)  # (1.9 - 1.5) / (5 - 1)
    assert r.tpot_s == pytest.approx(0.1125)  # vLLM: (end - first) / (5 - 1)
    assert r.e2e_s == pytest.approx(0.95)
    assert [g for g, _ in r.gaps()] == pytest.approx([0.1] * 4)
    assert attained(r)


def test_multi_token_chunks_count_tokens_not_chunks() -> None:
    r = rec(chunks=[(0.2, 1), (0.4, 3), (0.6, 2)])
    assert r.tokens == 6
    assert r.tbt_mean_s == pytest.approx(0.4 / 5)
    assert [n for _, n in r.gaps()] == [3, 2]
    assert [g for g, _ in r.gaps()] == pytest.approx([0.2, 0.2])
    s = summarize([r])
    assert s["itl_p50"] == pytest.approx(0.2)  # vLLM ITL: one gap per chunk


def test_attainment_needs_both_ttft_and_mean_tbt() -> None:
    slow_first = rec(chunks=[(1.2, 1), (1.3, 1)])
    slow_decode = rec(chunks=[(0.1, 1), (0.4, 1), (0.7, 1)])  # mean TBT 0.3 > 0.15
    one_token = rec(chunks=[(0.9, 1)])  # no TBT: only TTFT is judged
    at_limit = rec(chunks=[(1.0, 1), (1.15, 1)], slo=(1.0, 0.25))
    assert not attained(slow_first)
    assert not attained(slow_decode)
    assert attained(one_token)
    assert attained(at_limit)  # <= is a pass


def test_percentiles_attainment_goodput_on_known_ttfts() -> None:
    # ten completed requests, TTFT 0.1 .. 1.0 s, one token each; SLO TTFT 0.5 s
    records = [
        rec(i, 0.0, [(k / 10, 1)], end=k / 10, slo=(0.5, 0.1)) for i, k in enumerate(range(1, 11))
    ]
    s = summarize(records, duration_s=2.0)
    assert s["ttft_p50"] == pytest.approx(0.55)
    assert s["ttft_p90"] == pytest.approx(0.91)
    assert s["ttft_p99"] == pytest.approx(0.991)
    assert s["ttft_mean"] == pytest.approx(0.55)
    assert s["slo_attainment"] == pytest.approx(0.5)
    assert s["goodput_rps"] == pytest.approx(2.5)  # 5 attained / 2 s
    assert s["request_throughput"] == pytest.approx(5.0)
    assert s["throughput_tok_s"] == pytest.approx(5.0)
    assert s["tbt_mean_p50"] is None  # no request has two tokens


def test_failed_and_unfinished_are_misses_disconnected_are_left_out() -> None:
    good = rec(0, chunks=[(0.1, 1), (0.2, 1)])
    failed = rec(1, chunks=[(0.1, 1)], outcome=Outcome.FAILED)
    unfinished = rec(2, chunks=[(0.1, 1), (0.2, 1)], outcome=Outcome.UNFINISHED)
    left = rec(3, chunks=[(0.1, 1)], outcome=Outcome.DISCONNECTED)
    s = summarize([good, failed, unfinished, left])
    assert (s["total"], s["completed"], s["failed"], s["unfinished"], s["disconnected"]) == (
        4,
        1,
        1,
        1,
        1,
    )
    assert s["slo_attainment"] == pytest.approx(1 / 3)
    assert s["output_tokens"] == 6  # every token received counts for throughput
    assert s["ttft_p50"] == pytest.approx(0.1)  # latency percentiles: completed only
    assert s["duration_s"] == pytest.approx(0.2)


def test_by_class_and_prompt_error() -> None:
    a = rec(0, chunks=[(0.3, 1)], slo=(0.5, 0.1))
    b = rec(1, chunks=[(0.3, 1)], slo=(0.2, 0.1))
    b.prompt_tokens_reported = 101
    s = summarize([a, b])
    got = [
        (c["name"], c["slo_ttft_s"], c["slo_tbt_s"], c["requests"], c["slo_attainment"])
        for c in s["attainment_by_class"]
    ]
    assert got == [("0.2s/0.1s", 0.2, 0.1, 1, 0.0), ("0.5s/0.1s", 0.5, 0.1, 1, 1.0)]
    assert s["prompt_tokens_max_error"] == 1


def test_capacity_interpolates_the_first_crossing() -> None:
    pts = [(10, 0.98), (14, 0.95), (18, 0.85), (22, 0.5)]
    cap = capacity_at(pts)
    assert cap.status == "interpolated" and cap.rps == pytest.approx(16.0)
    assert capacity_at(list(reversed(pts))).rps == pytest.approx(16.0)  # order does not matter
    bumpy = [(10, 0.95), (12, 0.85), (14, 0.92), (16, 0.5)]
    assert capacity_at(bumpy).rps == pytest.approx(11.0)
    assert capacity_at([(10, 0.9), (20, 0.7)]).rps == pytest.approx(10.0)
    above = capacity_at([(10, 0.99), (20, 0.95)])
    assert (above.rps, above.status, above.bound) == (None, "above_range", 20.0)
    below = capacity_at([(10, 0.8), (20, 0.5)])
    assert (below.rps, below.status, below.bound) == (None, "below_range", 10.0)
    assert capacity_at([]).status == "no_points"


def test_record_json_round_trip_is_lossless() -> None:
    r = rec(3, 0.25, [(0.5, 2), (0.55, 1), (0.8, 4)], end=0.81)
    r.events = [{"t": 0.6, "kind": "offload"}]
    r.prefix_group = 2
    back = record_from_dict(record_to_dict(r))
    assert back.chunk_tokens == r.chunk_tokens
    assert back.chunk_times == pytest.approx(r.chunk_times)
    assert (back.index, back.outcome, back.events, back.prefix_group) == (3, r.outcome, r.events, 2)
    assert record_to_dict(r)["gap_tokens"] == [1, 4]


def test_tables_show_the_numbers() -> None:
    s = summarize([rec(0, chunks=[(0.25, 1), (0.35, 1)])], duration_s=1.0)
    text = format_summary(s)
    assert "SLO attainment 100.0%" in text and "250.0" in text
    table = format_sweep(
        [{"rate": 10.0, "summary": s}],
        {"capacity_rps_at_90": None, "capacity_status": "above_range", "capacity_bound": 10.0},
    )
    assert "above 10 req/s" in table
