"""Deadline arithmetic: EDF value, latest start, slack, margin, mean-TBT projection, priorities."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ascendra_proxy.core.deadline import (
    INFEASIBLE_PRIORITY_OFFSET,
    PRIORITY_MAX,
    PriorityClock,
    edf_value,
    latest_start,
    offload_margin,
    projected_mean_tbt,
    ttft_slack,
)


@pytest.mark.parametrize(
    ("now", "deadline", "est", "expected"),
    [
        (0.0, 1.0, 0.2, 1 / 0.8),  # paper: 1 / (SLO - (waited + est_prefill))
        (0.5, 1.0, 0.25, 1 / 0.25),
        (0.8, 1.0, 0.2, math.inf),  # exactly no room left: infeasible
        (0.9, 1.0, 0.2, math.inf),  # past the latest start
    ],
)
def test_edf_value(now: float, deadline: float, est: float, expected: float) -> None:
    assert edf_value(now, deadline, est) == pytest.approx(expected)


def test_latest_start_and_slack() -> None:
    assert latest_start(deadline=2.0, est_prefill=0.3) == pytest.approx(1.7)
    assert ttft_slack(now=1.0, deadline=2.0, predicted_ttft=0.4) == pytest.approx(0.6)
    assert ttft_slack(now=1.0, deadline=2.0, predicted_ttft=1.5) == pytest.approx(-0.5)


@given(
    now=st.floats(0, 10),
    a=st.tuples(st.floats(0, 20), st.floats(0, 5)),
    b=st.tuples(st.floats(0, 20), st.floats(0, 5)),
)
def test_edf_value_order_is_latest_start_order(
    now: float, a: tuple[float, float], b: tuple[float, float]
) -> None:
    """Higher EDF value (runs first) <=> earlier latest start; infeasible ones first."""
    la, lb = latest_start(*a), latest_start(*b)
    assume(min(abs(la - now), abs(lb - now), abs(la - lb)) > 1e-6)
    va, vb = edf_value(now, *a), edf_value(now, *b)
    if la > now and lb > now:  # both feasible
        assert (va > vb) == (la < lb)
    elif la <= now < lb:  # a infeasible: it sorts first
        assert va == math.inf > vb


@pytest.mark.parametrize(
    ("slo", "margin", "frac", "expected"),
    [
        (1.0, 0.7, 1.0, 0.7),  # the paper: Δ = 0.7 s at a 1 s SLO
        (1.0, 0.7, 0.3, 0.3),  # our default cap
        (0.5, 0.7, 0.3, 0.15),  # tight SLO: the cap decides
        (2.5, 0.7, 0.3, 0.7),  # loose SLO: the paper's constant decides
        (1.0, 0.0, 0.3, 0.0),
    ],
)
def test_offload_margin(slo: float, margin: float, frac: float, expected: float) -> None:
    assert offload_margin(slo, margin, frac) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("first", "tokens", "now", "extra_s", "extra_tokens", "expected"),
    [
        (0.0, 11, 1.0, 0.0, 0, 0.1),  # observed mean so far: 1 s over 10 gaps
        (0.0, 11, 1.0, 1.0, 10, 0.1),  # 10 more tokens in 1 s keeps the mean
        (0.0, 11, 1.0, 3.0, 10, 0.2),  # a slow stretch drags it up
        (5.0, 1, 5.0, 0.5, 5, 0.1),  # first token only: the horizon decides
        (5.0, 1, 5.0, 0.0, 0, 0.0),  # no gap at all
    ],
)
def test_projected_mean_tbt(
    first: float, tokens: int, now: float, extra_s: float, extra_tokens: int, expected: float
) -> None:
    assert projected_mean_tbt(first, tokens, now, extra_s, extra_tokens) == pytest.approx(expected)


def test_priority_clock_orders_by_time_in_ms() -> None:
    c = PriorityClock(epoch=100.0)
    assert c.priority(100.0) == 0
    assert c.priority(100.2505) == 250 or c.priority(100.2505) == 251
    assert c.priority(101.0) == 1000
    assert c.priority(99.0) == 0  # clamped, never negative


@given(t=st.floats(0, 1e6), u=st.floats(0, 1e6))
def test_priority_is_monotone_and_infeasible_goes_last(t: float, u: float) -> None:
    c = PriorityClock(epoch=0.0)
    if t <= u:
        assert c.priority(t) <= c.priority(u)
    assert c.priority(t, infeasible=True) > c.priority(u)
    assert 0 <= c.priority(t, infeasible=True) <= PRIORITY_MAX


def test_priority_clock_rebases_before_overflow() -> None:
    c = PriorityClock(epoch=0.0)
    far = (INFEASIBLE_PRIORITY_OFFSET // 2) * c.resolution_s
    assert not c.needs_rebase(1000.0, 3600.0)
    assert c.needs_rebase(far, 3600.0)
    r = c.rebased(far + 0.7)
    assert r.epoch == math.floor(far + 0.7)
    assert r.priority(far + 1.0) < 1000
