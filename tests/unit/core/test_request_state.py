"""RequestState: phases, token/gap accounting, deadlines, slack and exactly-once finish."""

from __future__ import annotations

import pytest
from core_builders import request

from ascendra_proxy.core.request import Outcome, Phase, RequestState, RequestStateError
from ascendra_proxy.core.slo import SLO


def streamed(arrivals: list[tuple[float, int]], arrival: float = 0.0) -> RequestState:
    """A request dispatched at ``arrival`` that received ``(time, n_tokens)`` arrivals."""
    req = request(arrival=arrival)
    req.on_dispatch(arrival, "b0")
    for now, n in arrivals:
        req.on_tokens(now, n)
    return req


@pytest.mark.parametrize(
    ("arrivals", "tokens", "ttft", "mean_tbt", "gaps", "gap_sum", "max_gap"),
    [
        pytest.param([], 0, None, None, 0, 0.0, 0.0, id="no-tokens"),
        pytest.param([(0.5, 1)], 1, 0.5, None, 0, 0.0, 0.0, id="one-token"),
        pytest.param([(0.5, 1), (0.6, 1)], 2, 0.5, 0.1, 1, 0.1, 0.1, id="two-tokens"),
        pytest.param(
            [(0.5, 1), (0.6, 1), (0.9, 1), (1.0, 1)], 4, 0.5, 0.5 / 3, 3, 0.5, 0.3, id="uneven"
        ),
        # 4 tokens arriving together: one real gap and three zero gaps (gaps = tokens - 1).
        pytest.param([(0.5, 1), (0.9, 4)], 5, 0.5, 0.4 / 4, 4, 0.4, 0.4, id="multi-token-chunk"),
        pytest.param([(0.5, 3)], 3, 0.5, 0.0, 2, 0.0, 0.0, id="first-arrival-multi"),
        # Empty chunks (n=0) are not tokens and change nothing.
        pytest.param([(0.5, 1), (0.55, 0), (0.7, 1)], 2, 0.5, 0.2, 1, 0.2, 0.2, id="empty-chunk"),
    ],
)
def test_token_accounting(
    arrivals: list[tuple[float, int]],
    tokens: int,
    ttft: float | None,
    mean_tbt: float | None,
    gaps: int,
    gap_sum: float,
    max_gap: float,
) -> None:
    req = streamed(arrivals)
    assert req.tokens == tokens
    assert req.ttft == (None if ttft is None else pytest.approx(ttft))
    assert req.mean_tbt == (None if mean_tbt is None else pytest.approx(mean_tbt))
    assert req.gaps == gaps
    assert req.gap_sum == pytest.approx(gap_sum)
    assert req.max_gap == pytest.approx(max_gap)


def test_ttft_is_measured_from_arrival_not_dispatch() -> None:
    req = request(arrival=10.0)
    req.on_dispatch(10.4, "b0")
    req.on_tokens(10.9, 1)
    assert req.ttft == pytest.approx(0.9)
    assert req.dispatched_at == 10.4


@pytest.mark.parametrize(
    ("arrivals", "now", "deadline", "slack"),
    [
        # Before the first token the deadline is arrival + TTFT SLO (1.0 s).
        pytest.param([], 0.25, 1.0, 0.75, id="waiting"),
        pytest.param([], 1.5, 1.0, -0.5, id="ttft-already-missed"),
        # After k tokens, token k+1 is due by first + k * tbt (tbt SLO 0.1 s).
        pytest.param([(0.5, 1)], 0.55, 0.6, 0.05, id="after-first-token"),
        pytest.param([(0.5, 1), (0.6, 2)], 0.6, 0.8, 0.2, id="after-three-tokens"),
        # A slow stream eats into the budget: token 3 due at 0.7, it is 0.75 already.
        pytest.param([(0.5, 1), (0.7, 1)], 0.75, 0.7, -0.05, id="tbt-budget-spent"),
    ],
)
def test_next_token_deadline_and_slack(
    arrivals: list[tuple[float, int]], now: float, deadline: float, slack: float
) -> None:
    req = streamed(arrivals)
    assert req.next_token_deadline == pytest.approx(deadline)
    assert req.slack(now) == pytest.approx(slack)


@pytest.mark.parametrize(
    ("arrivals", "ttft_met", "tbt_met", "slo_met"),
    [
        pytest.param([], False, True, False, id="never-started"),
        pytest.param([(1.0, 1)], True, True, True, id="ttft-exactly-at-slo"),
        pytest.param([(1.01, 1)], False, True, False, id="ttft-late"),
        pytest.param([(0.5, 1), (0.8, 1), (0.9, 8)], True, True, True, id="one-long-gap-mean-ok"),
        pytest.param([(0.5, 1), (0.9, 1), (1.3, 1)], True, False, False, id="mean-tbt-too-high"),
    ],
)
def test_slo_met(
    arrivals: list[tuple[float, int]], ttft_met: bool, tbt_met: bool, slo_met: bool
) -> None:
    req = streamed(arrivals)
    assert (req.ttft_met, req.tbt_met, req.slo_met) == (ttft_met, tbt_met, slo_met)


def test_ttft_deadline_uses_request_slo() -> None:
    req = request(arrival=3.0, slo=SLO(ttft_s=0.25, tbt_s=0.05))
    assert req.ttft_deadline == 3.25
    assert req.waited(3.2) == pytest.approx(0.2)


def test_waited_stops_at_first_token() -> None:
    req = streamed([(0.4, 1)])
    assert req.waited(9.0) == pytest.approx(0.4)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_finish_happens_exactly_once(outcome: Outcome) -> None:
    req = streamed([(0.5, 1)])
    assert req.finish(1.0, outcome) is True
    other = Outcome.COMPLETED if outcome is not Outcome.COMPLETED else Outcome.BACKEND_FAILED
    assert req.finish(2.0, other) is False
    assert req.finish(3.0, outcome) is False
    assert (req.phase, req.outcome, req.finished_at) == (Phase.FINISHED, outcome, 1.0)


def test_finish_from_queue_without_dispatch() -> None:
    req = request()
    assert req.finish(0.1, Outcome.REJECTED)
    assert req.phase is Phase.FINISHED and req.attempts == 0


def test_tokens_after_finish_are_ignored_and_reported() -> None:
    req = streamed([(0.5, 1)])
    req.finish(0.6, Outcome.CLIENT_DISCONNECTED)
    assert req.on_tokens(0.7, 3) is False
    assert req.tokens == 1 and req.last_token_at == 0.5


def where(req: RequestState) -> tuple[Phase, str | None, int, int]:
    return (req.phase, req.backend, req.attempts, req.moves)


def test_phases_move_forward() -> None:
    req = request()
    assert where(req) == (Phase.QUEUED, None, 0, 0)
    req.on_dispatch(0.1, "a")
    assert where(req) == (Phase.DISPATCHED, "a", 1, 0)
    req.on_requeue()  # pre-first-byte failure: back to the proxy queue
    assert where(req) == (Phase.QUEUED, None, 1, 0)
    req.on_dispatch(0.2, "b")
    assert where(req) == (Phase.DISPATCHED, "b", 2, 0)
    req.on_tokens(0.3, 1)
    assert where(req) == (Phase.STREAMING, "b", 2, 0) and req.started
    req.on_dispatch(0.4, "c")  # mid-stream migration keeps STREAMING and counts a move
    assert where(req) == (Phase.STREAMING, "c", 3, 1)
    assert req.remaining_tokens == 15


@pytest.mark.parametrize(
    ("setup", "call"),
    [
        pytest.param("queued", lambda r: r.on_tokens(1.0, 1), id="tokens-before-dispatch"),
        pytest.param("dispatched", lambda r: r.on_tokens(1.0, -1), id="negative-tokens"),
        pytest.param("streaming", lambda r: r.on_tokens(0.4, 1), id="time-goes-backwards"),
        pytest.param("streaming", lambda r: r.on_requeue(), id="requeue-after-tokens"),
        pytest.param("finished", lambda r: r.on_dispatch(2.0, "b"), id="dispatch-after-finish"),
        pytest.param("finished", lambda r: r.on_requeue(), id="requeue-after-finish"),
    ],
)
def test_misuse_is_a_loud_error(setup: str, call: object) -> None:
    req = request()
    if setup != "queued":
        req.on_dispatch(0.0, "a")
    if setup in ("streaming", "finished"):
        req.on_tokens(0.5, 1)
    if setup == "finished":
        req.finish(1.0, Outcome.COMPLETED)
    with pytest.raises(RequestStateError):
        call(req)  # type: ignore[operator]


@pytest.mark.parametrize(
    "arrivals",
    [
        [(0.5, 1), (0.6, 1), (0.7, 1)],
        [(0.5, 3), (0.9, 4), (1.0, 1)],
        [(0.5, 1), (0.9, 97), (1.5, 2)],
    ],
)
def test_gaps_are_per_token_however_arrivals_coalesce(arrivals: list[tuple[float, int]]) -> None:
    req = streamed(arrivals)
    assert req.gaps == req.tokens - 1
    assert req.mean_gap == pytest.approx(req.mean_tbt)
