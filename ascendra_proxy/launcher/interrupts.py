"""Ctrl-C and SIGTERM during a launch: unwind to the cleanup, never in the middle of a call.

Theory of operation.  While the launcher starts containers and waits for them, SIGINT and
SIGTERM raise :class:`Interrupted` (Python runs signal handlers in the main thread), so the
launcher's ``finally`` removes what it started.  Inside :meth:`InterruptGuard.held`, around
each container's create and start, a signal is only remembered and raised when the block
ends: an interrupt between the engine creating a container and the SDK call returning
would leave a container that the cleanup, which finds containers by label, may miss.
(Blocking the signals with ``pthread_sigmask`` is not enough: imported libraries run
threads of their own, and the kernel hands a process-directed signal to any thread that
does not block it.)  :func:`sigterm_ignored` protects the cleanup from a second SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["InterruptGuard", "Interrupted", "sigterm_ignored"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the launch was in progress."""


class InterruptGuard:
    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self._pending = signum
            return
        raise Interrupted(signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route SIGINT/SIGTERM to this guard (an event loop may take them over inside)."""
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Defer SIGINT/SIGTERM to the end of the block."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def sigterm_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
