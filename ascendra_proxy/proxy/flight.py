"""A flight: one admitted request's live plumbing next to its core ``RequestState``.

Theory of operation: the core's ``RequestState`` is the policy-visible record (progress,
deadlines, outcome).  The proxy needs more per request, kept here: the parsed client
request, the current backend and upstream attempt, the backends that already failed it
(``exclude``), decisions taken outside the request's own call path (``pending``: a tick
``Assign`` or ``Move``; ``dropped``: a tick ``Drop``), the prompt tokens counted as queued
on the current backend, the last upstream error (for an honest 502 when every backend
failed); for streams, the client's ``record`` and the ``continuation`` plan once a started
stream resumes on another backend.

Moves (for the rescue metrics): ``begin_move`` is called when the flight leaves a backend for
a policy ``Move`` (offload or migration) or for a failover continuation.  ``moved`` keeps
the first move's reason (the request is counted in ``moved_requests_total`` when it ends);
``resubmitted`` marks the next attempt the flight forwards as that move's target, whose
prompt (and the engine's cached part of it) is counted once when that attempt ends.
``route`` and ``moves`` keep every dispatch and move for the request log.

``Signal`` is the wake-up for held requests: any change in capacity (an attempt ends, a
request finishes, a tick assigns) calls ``notify``; waiters also re-check after ``at_most_s``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ascendra_proxy.backends.chunks import StreamRecord
from ascendra_proxy.backends.continuation import Continuation
from ascendra_proxy.backends.errors import UpstreamError
from ascendra_proxy.core.decisions import Dispatch, Reject
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.proxy.validate import GenerationRequest

if TYPE_CHECKING:
    from ascendra_proxy.backends.upstream import UpstreamAttempt
    from ascendra_proxy.proxy.runtime import BackendRuntime


class Flight:
    __slots__ = (
        "attempt",
        "backend",
        "continuation",
        "dropped",
        "exclude",
        "first_dispatch",
        "gen",
        "last_error",
        "moved",
        "moves",
        "outcome",
        "pending",
        "queued_tokens",
        "record",
        "resubmitted",
        "route",
        "state",
    )

    def __init__(self, state: RequestState, gen: GenerationRequest) -> None:
        self.state = state
        self.gen = gen
        self.backend: BackendRuntime | None = None
        self.attempt: UpstreamAttempt | None = None
        self.continuation: Continuation | None = None  # set once a stream resumes elsewhere
        self.record: StreamRecord | None = None  # what a streaming client was sent
        self.exclude: set[str] = set()
        self.pending: Dispatch | None = None
        self.dropped: Reject | None = None
        self.last_error: UpstreamError | None = None
        self.queued_tokens = 0
        self.outcome: Outcome | None = None
        self.moved: str | None = None  # the first move's reason
        self.resubmitted = False  # the next forwarded attempt is a move's target
        # For the request log: every dispatch (time, backend) and every move, in order.
        self.first_dispatch: float | None = None
        self.route: list[tuple[float, str, str]] = []  # (time, backend, the dispatch's reason)
        self.moves: list[dict[str, str | float | None]] = []

    def begin_move(self, reason: str) -> None:
        """The flight leaves its backend for a policy move or a failover continuation."""
        if self.moved is None:
            self.moved = reason
        self.resubmitted = True
        source = None if self.backend is None else self.backend.name
        self.moves.append({"reason": reason, "from": source, "to": None, "t": None})

    def note_dispatch(self, now: float, backend: str, reason: str) -> None:
        """The flight was sent to ``backend``; completes the move it was the target of."""
        if self.first_dispatch is None:
            self.first_dispatch = now
        self.route.append((now, backend, reason))
        if self.moves and self.moves[-1]["to"] is None:
            self.moves[-1].update(to=backend, t=round(now - self.state.arrival, 6))


class Signal:
    """A broadcast wake-up: ``wait`` returns on the next ``notify`` or after ``timeout``."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, at_most_s: float) -> None:
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._waiter,), timeout=at_most_s)

    def notify(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
