"""The policy's own per-request record and its EDF queue of held requests.

Theory of operation.  The driver owns each :class:`~ascendra_proxy.core.request.RequestState`
(phase, backend, tokens); the policy keeps beside it only what the driver does not know: a
:class:`Track` per routed request with its static LP ordering key (latest start, see
:mod:`ascendra_proxy.core.deadline`), its prefix checkpoints, whether it was offloaded,
warmed or migrated, and the engine priority and expected cache hit of its current dispatch.

:class:`HeldQueue` holds the ids of the requests the policy told the driver to hold, sorted
by ``(latest start, arrival sequence, id)``: earliest deadline first, arrival order among
equals, total and deterministic.  The key never changes, so the queue stays ordered by
construction (insertion by bisection; removal by bisection then delete).
:meth:`HeldQueue.serving_order` may move the requests whose latest start has already
passed (the paper's "infeasible", EDF value +inf; a prefix of the queue) behind the others:
they miss anyway, and serving them first would make the ones behind them miss too.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from ascendra_proxy.core.prefix import Checkpoints

__all__ = ["HeldQueue", "Track"]


@dataclass(slots=True)
class Track:
    id: str
    model: str
    key: float  # latest start: ttft deadline - est_prefill (smaller runs first)
    est_prefill: float
    seq: int  # routing order, breaks ties
    prefix: Checkpoints = ()  # prompt prefix checkpoints (see core.prefix)
    exclude: frozenset[str] = frozenset()
    cached_tokens: int = 0  # expected prefix hit on the current backend
    priority: int | None = None  # engine priority of the current dispatch
    offloaded: bool = False
    warmed: str | None = None  # HP backend that got a warm-up prefill
    migrations: int = 0

    @property
    def order(self) -> tuple[float, int, str]:
        return (self.key, self.seq, self.id)


class HeldQueue:
    """Ids of held requests in EDF order."""

    def __init__(self) -> None:
        self._order: list[tuple[float, int, str]] = []
        self._keys: dict[str, tuple[float, int, str]] = {}

    def push(self, track: Track) -> None:
        if track.id in self._keys:
            return
        key = track.order
        bisect.insort(self._order, key)
        self._keys[track.id] = key

    def remove(self, request_id: str) -> bool:
        key = self._keys.pop(request_id, None)
        if key is None:
            return False
        i = bisect.bisect_left(self._order, key)
        del self._order[i]
        return True

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._keys

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        return (k[2] for k in list(self._order))

    def serving_order(self, now: float, infeasible_last: bool) -> list[str]:
        """Ids in the order to serve them: EDF; with ``infeasible_last``, the requests whose
        latest start has passed (a prefix of the queue) go after all the others."""
        ids = [k[2] for k in self._order]
        if not infeasible_last:
            return ids
        split = bisect.bisect_left(self._order, (now,))
        return ids[split:] + ids[:split]

    def keys(self) -> list[tuple[float, int, str]]:
        """The sorted keys (a copy)."""
        return list(self._order)
