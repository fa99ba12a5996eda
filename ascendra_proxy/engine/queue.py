"""The waiting queue: FCFS deque or priority heap, with vLLM's ordering rules.

Theory of operation: FCFS serves in arrival order, and a preempted request goes back to the
*front* (vLLM's ``prepend_request``).  PRIORITY is a heap on ``(priority, arrival_time,
admission order)``: a lower value runs first, ties by arrival; a preempted request simply
re-enters the heap.  Removal (abort) is lazy: the caller marks the sequence's status and the
queue skips entries that are no longer WAITING when it reaches them, so abort is O(1).
"""

from __future__ import annotations

import heapq
from collections import deque

from .sequence import Sequence, Status


class WaitingQueue:
    def __init__(self, policy: str) -> None:
        self._priority = policy == "priority"
        self._dq: deque[Sequence] = deque()
        self._heap: list[tuple[int, float, int, Sequence]] = []
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, seq: Sequence) -> None:
        if self._priority:
            heapq.heappush(self._heap, (seq.priority, seq.arrival, seq.order, seq))
        else:
            self._dq.append(seq)
        self._live += 1

    def push_front(self, seq: Sequence) -> None:
        """Re-queue a preempted sequence (front for FCFS, by key for PRIORITY)."""
        if self._priority:
            self.push(seq)
        else:
            self._dq.appendleft(seq)
            self._live += 1

    def peek(self) -> Sequence | None:
        if self._priority:
            heap = self._heap
            while heap and heap[0][3].status is not Status.WAITING:
                heapq.heappop(heap)
            return heap[0][3] if heap else None
        dq = self._dq
        while dq and dq[0].status is not Status.WAITING:
            dq.popleft()
        return dq[0] if dq else None

    def pop(self) -> Sequence:
        seq = self.peek()
        if seq is None:
            raise IndexError("pop from an empty waiting queue")
        if self._priority:
            heapq.heappop(self._heap)
        else:
            self._dq.popleft()
        self._live -= 1
        return seq

    def discard(self, seq: Sequence) -> None:
        """Account for a sequence the caller has just marked as no longer WAITING."""
        self._live -= 1

    def snapshot(self) -> list[Sequence]:
        """Live entries in service order (O(n log n); for tests and debugging)."""
        if self._priority:
            entries = sorted(e for e in self._heap if e[3].status is Status.WAITING)
            return [e[3] for e in entries]
        return [s for s in self._dq if s.status is Status.WAITING]
