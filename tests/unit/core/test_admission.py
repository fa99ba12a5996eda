"""The one admission rule: admit, keep last, or refuse with a Retry-After."""

from __future__ import annotations

import pytest

from ascendra_proxy.core.admission import (
    RETRY_AFTER_MAX_S,
    Verdict,
    admission,
    is_shed,
    retry_after_s,
    shed,
)
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.core.slo import SLO, SLOTable, resolve_slo


def req(on_late: str = "refuse", arrival: float = 0.0) -> RequestState:
    slo = SLO(1.0, 0.1, on_late)  # type: ignore[arg-type]
    return RequestState("r", "m", prompt_tokens=100, max_tokens=10, slo=slo, arrival=arrival)


@pytest.mark.parametrize(
    ("on_late", "now", "best_ttft", "idle", "verdict"),
    [
        ("refuse", 0.2, 0.7, False, Verdict.ADMIT),  # first token at 0.9 <= deadline 1.0
        ("refuse", 0.2, 0.9, False, Verdict.REFUSE),  # at 1.1: late everywhere
        ("keep", 0.2, 0.9, False, Verdict.KEEP_LAST),  # did not opt in: kept
        ("refuse", 0.2, 0.9, True, Verdict.ADMIT),  # never refuse while an engine idles
        ("refuse", 1.5, None, False, Verdict.REFUSE),  # no prediction: the deadline passed
        ("refuse", 0.5, None, False, Verdict.ADMIT),  # no prediction, deadline ahead
    ],
)
def test_the_rule(
    on_late: str, now: float, best_ttft: float | None, idle: bool, verdict: Verdict
) -> None:
    assert admission(req(on_late), now, best_ttft, idle) is verdict


def test_default_class_never_refuses() -> None:
    r = RequestState("r", "m", 100, 10, SLO(1.0, 0.1), arrival=0.0)
    assert admission(r, 100.0, 50.0, False) is Verdict.KEEP_LAST


def test_retry_after_is_whole_seconds_from_the_queue_and_bounded() -> None:
    assert retry_after_s(0.2) == 1
    assert retry_after_s(3.2) == 4
    assert retry_after_s(1e9) == RETRY_AFTER_MAX_S
    assert retry_after_s(float("inf")) == RETRY_AFTER_MAX_S


def test_the_refusal_is_a_429_with_its_code_reason_and_retry_after() -> None:
    r = shed(req(), now=1.5, backlog_s=7.3)
    assert (r.status, r.code, r.reason, r.retry_after_s) == (429, "deadline_unreachable", "shed", 8)
    assert r.message.startswith("deadline_unreachable:")
    assert is_shed(r)


def test_header_overrides_keep_the_class_choice() -> None:
    table = SLOTable(SLO(1.0, 0.1), classes={"batch": SLO(30.0, 0.5, "refuse")})
    got = resolve_slo(table, "m", "batch", header_ttft_ms=5000.0)
    assert (got.ttft_s, got.on_late) == (5.0, "refuse")
