"""The proxy's histogram: plain numbers, one ``bisect`` per observation (the token hot path
observes an inter-token gap per read); rendered at scrape time by ``proxy/telemetry.py``."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class FastHistogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def observe_zeros(self, n: int) -> None:
        """``n`` observations of 0 (tokens that arrived with the one before them)."""
        self.counts[0] += n
        self.count += n

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out
