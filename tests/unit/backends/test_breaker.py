"""Circuit breaker transitions (clock passed in)."""

from __future__ import annotations

from ascendra_proxy.backends.health import BreakerState, CircuitBreaker


def test_opens_after_threshold_consecutive_failures() -> None:
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10)
    b.record_failure(0.0)
    b.record_failure(0.1)
    assert b.state(0.2) is BreakerState.CLOSED
    b.record_failure(0.2)
    assert b.state(0.3) is BreakerState.OPEN and not b.available(0.3)


def test_success_resets_the_count() -> None:
    b = CircuitBreaker(failure_threshold=2, cooldown_s=10)
    b.record_failure(0.0)
    b.record_success()
    b.record_failure(1.0)
    assert b.available(1.0)


def test_half_open_after_cooldown_then_closes_on_success() -> None:
    b = CircuitBreaker(failure_threshold=1, cooldown_s=5)
    b.record_failure(0.0)
    assert b.state(4.9) is BreakerState.OPEN
    assert b.state(5.0) is BreakerState.HALF_OPEN and b.available(5.0)
    b.record_success()
    assert b.state(5.1) is BreakerState.CLOSED


def test_half_open_failure_reopens_for_a_full_cooldown() -> None:
    b = CircuitBreaker(failure_threshold=3, cooldown_s=5)
    for t in (0.0, 0.1, 0.2):
        b.record_failure(t)
    b.record_failure(6.0)  # half-open probe fails: one failure is enough
    assert b.state(10.9) is BreakerState.OPEN
    assert b.state(11.0) is BreakerState.HALF_OPEN
    assert b.opened_count == 2


def test_failures_while_open_do_not_extend_the_cooldown() -> None:
    b = CircuitBreaker(failure_threshold=1, cooldown_s=5)
    b.record_failure(0.0)
    b.record_failure(3.0)
    assert b.state(5.0) is BreakerState.HALF_OPEN
