"""The simulator's clock: a heap of timed events with a total, deterministic order.

Theory of operation: an event is ``(time, kind, seq, payload)``.  Ties in time are broken by
the kind's rank (the order in which a real system would see simultaneous things: bytes that
already left an engine reach the proxy before the engine starts its next step, a step ends
before the monitor tick that reads its result, and so on) and then by ``seq``, a counter owned
by the queue instance (never a class attribute), so two simulations in one process do not
influence each other.  Only the queue knows time; handlers get it as an argument.
"""

from __future__ import annotations

import heapq
from enum import IntEnum
from typing import Any

__all__ = ["EventQueue", "Kind"]


class Kind(IntEnum):
    """Event kinds, in tie-break order (lower runs first at equal times)."""

    TOKENS = 0  # a step's outputs reach the proxy
    REJECTED = 1  # an engine refused a request (400); the answer reaches the proxy
    ENGINE_ABORT = 2  # an abort reaches an engine
    ENGINE_ADD = 3  # a request reaches an engine
    STEP_END = 4  # an engine finishes a step
    SCRAPE = 5  # the proxy scrapes an engine's /metrics
    SCRAPED = 6  # the scrape answer reaches the proxy
    ARRIVAL = 7  # a client request reaches the proxy
    DISCONNECT = 8  # a client hangs up on purpose (workload disconnects)
    RECHECK = 9  # held requests ask the policy again (capacity changed / timer)
    TICK = 10  # the policy's monitor tick


class EventQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0

    def push(self, t: float, kind: Kind, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, int(kind), self._seq, payload))

    def pop(self) -> tuple[float, Kind, Any]:
        t, kind, _seq, payload = heapq.heappop(self._heap)
        return t, Kind(kind), payload

    def peek_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
