"""Finding the capacity at 90% attainment with few simulated points: a bracketing search.

Theory of operation: a :class:`CapacitySearch` holds the (rate, attainment) points measured
so far for one workload, policy and seed, and proposes the next rate to measure:

* no point yet: the start rate;
* every point meets the target: grow the largest rate by ``grow`` (no crossing yet);
* no point meets it: shrink the smallest rate by ``grow``;
* otherwise the crossing lies between the largest rate that meets it (``lo``) and the
  smallest that does not (``hi``): propose the linear interpolation between them, kept at
  least ``guard`` of the bracket away from either end so the bracket always shrinks.

It stops after ``max_points`` points, or once the bracket is narrower than ``tolerance``
(relative to ``lo``).  The capacity is then :func:`loadgen.metrics.capacity_at` over all the
points (the first downward crossing, linearly interpolated), exactly as for a fixed sweep.
Searches are independent, so a driver can run one round (the next point of every unfinished
search) in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loadgen.metrics import Capacity, capacity_at

__all__ = ["CapacitySearch"]


@dataclass(slots=True)
class CapacitySearch:
    start: float
    target: float = 0.9
    max_points: int = 6
    grow: float = 1.6
    guard: float = 0.15
    tolerance: float = 0.03
    points: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.start > 0 and self.grow > 1 and 0 < self.guard < 0.5 and self.max_points > 0):
            raise ValueError(f"bad capacity search settings: {self}")

    def add(self, rate: float, attainment: float) -> None:
        self.points.append((rate, attainment))

    def _bracket(self) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        ok = [p for p in self.points if p[1] >= self.target]
        bad = [p for p in self.points if p[1] < self.target]
        hi = min(bad) if bad else None
        # The largest passing rate below the first failing one (a noisy pass above it
        # does not move the bracket).
        below = [p for p in ok if hi is None or p[0] < hi[0]]
        lo = max(below) if below else None
        return lo, hi

    @property
    def done(self) -> bool:
        if len(self.points) >= self.max_points:
            return True
        lo, hi = self._bracket()
        return lo is not None and hi is not None and hi[0] - lo[0] <= self.tolerance * lo[0]

    def next_rate(self) -> float:
        """The rate to measure next (call only while not :attr:`done`)."""
        if not self.points:
            return self.start
        lo, hi = self._bracket()
        if hi is None:
            return max(r for r, _ in self.points) * self.grow
        if lo is None:
            return min(r for r, _ in self.points) / self.grow
        (r0, a0), (r1, a1) = lo, hi
        guess = r0 + (a0 - self.target) * (r1 - r0) / (a0 - a1)
        margin = self.guard * (r1 - r0)
        return min(max(guess, r0 + margin), r1 - margin)

    def capacity(self) -> Capacity:
        return capacity_at(self.points, self.target)
