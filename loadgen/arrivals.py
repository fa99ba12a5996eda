"""Arrival processes: when each request of a run is sent, in seconds from the run start.

Theory of operation: every function returns a non-decreasing float array of ``n`` offsets
whose first element is 0 (the run starts with a request, as ``vllm bench serve`` does).
Random processes draw only from the ``numpy.random.Generator`` they are handed.

- ``poisson``: exponential gaps with mean ``1/rate``.
- ``gamma``: gamma gaps with shape ``burstiness`` and scale ``1/(rate*burstiness)``, exactly
  ``vllm bench serve --burstiness``: the mean rate stays ``rate`` and the coefficient of
  variation of the gaps is ``1/sqrt(burstiness)``; 1 is Poisson, below 1 is burstier, above 1
  is smoother.
- ``constant``: gaps of exactly ``1/rate``.
- trace: the trace's own timestamps shifted to start at 0, either at the original pace,
  sped up by a rate ``scale`` (2 = twice the rate), or re-timed so the mean rate over the
  slice equals a target ``rate`` (a uniform time scaling, which keeps the burst structure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ARRIVAL_KINDS",
    "ArrivalSpec",
    "constant_arrivals",
    "gamma_arrivals",
    "make_arrivals",
    "poisson_arrivals",
    "trace_arrivals",
]

ARRIVAL_KINDS = ("poisson", "gamma", "constant", "trace")


def _check(rate: float, n: int) -> None:
    if not rate > 0:
        raise ValueError(f"arrival rate must be positive, got {rate}")
    if n < 0:
        raise ValueError(f"number of requests must be >= 0, got {n}")


def _offsets(gaps: np.ndarray) -> np.ndarray:
    """Offsets starting at 0 from n-1 gaps (n >= 1)."""
    return np.concatenate(([0.0], np.cumsum(gaps)))


def poisson_arrivals(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    _check(rate, n)
    if n == 0:
        return np.empty(0)
    return _offsets(rng.exponential(1.0 / rate, size=n - 1))


def gamma_arrivals(rng: np.random.Generator, rate: float, n: int, burstiness: float) -> np.ndarray:
    _check(rate, n)
    if not burstiness > 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if n == 0:
        return np.empty(0)
    return _offsets(rng.gamma(burstiness, 1.0 / (rate * burstiness), size=n - 1))


def constant_arrivals(rate: float, n: int) -> np.ndarray:
    _check(rate, n)
    return np.arange(n, dtype=float) / rate


def trace_arrivals(
    times: Sequence[float], *, scale: float | None = None, rate: float | None = None
) -> np.ndarray:
    """Trace timestamps from 0: original pace, ``scale``-times faster, or re-timed to ``rate``."""
    if scale is not None and rate is not None:
        raise ValueError("give either a rate scale or a target rate for a trace, not both")
    t: np.ndarray = np.asarray(times, dtype=float)
    if t.size == 0:
        return t
    t = t - t[0]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"rate scale must be positive, got {scale}")
        scaled: np.ndarray = t / scale
        return scaled
    if rate is not None:
        if not rate > 0:
            raise ValueError(f"target rate must be positive, got {rate}")
        if t.size < 2 or t[-1] <= 0:
            raise ValueError("cannot re-time a trace slice with fewer than two distinct arrivals")
        natural = (t.size - 1) / t[-1]
        retimed: np.ndarray = t * (natural / rate)
        return retimed
    return t


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """How arrivals are made; ``rate`` is ignored for a trace at its original pace."""

    kind: str = "poisson"
    rate: float | None = None
    burstiness: float = 1.0
    trace_scale: float | None = None  # only for kind == "trace"

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise ValueError(f"arrival kind must be one of {ARRIVAL_KINDS}, got {self.kind!r}")
        if self.kind != "trace" and self.rate is None:
            raise ValueError(f"{self.kind} arrivals need a rate")

    def with_rate(self, rate: float) -> ArrivalSpec:
        return ArrivalSpec(self.kind, rate, self.burstiness, None)

    def describe(self) -> str:
        if self.kind == "trace":
            if self.rate is not None:
                return f"trace re-timed to {self.rate:g} req/s"
            if self.trace_scale is not None:
                return f"trace x{self.trace_scale:g}"
            return "trace at original pace"
        if self.kind == "gamma":
            return f"gamma(burstiness={self.burstiness:g}) at {self.rate:g} req/s"
        return f"{self.kind} at {self.rate:g} req/s"


def make_arrivals(
    spec: ArrivalSpec,
    n: int,
    rng: np.random.Generator,
    trace_times: Sequence[float] | None = None,
) -> np.ndarray:
    """Arrival offsets for ``n`` requests under ``spec``."""
    if spec.kind == "trace":
        if trace_times is None or len(trace_times) < n:
            have = 0 if trace_times is None else len(trace_times)
            raise ValueError(f"trace arrivals need {n} timestamps, the trace has {have}")
        return trace_arrivals(trace_times[:n], scale=spec.trace_scale, rate=spec.rate)
    assert spec.rate is not None  # checked in ArrivalSpec
    if spec.kind == "constant":
        return constant_arrivals(spec.rate, n)
    if spec.kind == "gamma" or spec.burstiness != 1.0:
        return gamma_arrivals(rng, spec.rate, n, spec.burstiness)
    return poisson_arrivals(rng, spec.rate, n)
