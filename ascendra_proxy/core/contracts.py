"""The extension points of the core, as Protocols; this module depends only on core types.

A policy is a synchronous object driven by one driver.  Contract for implementers:

* ``route`` decides for one request that is waiting in the proxy (fresh, retried after a
  pre-first-byte failure with the failed backends in ``exclude``, or released from a Hold).
  It returns a :data:`~ascendra_proxy.core.decisions.Decision`, never raises for "nothing
  fits", never mutates the request, and only considers backends that serve
  ``req.model``, are healthy, have room and are not excluded.
* ``on_finish`` is called exactly once per routed request, after ``RequestState.finish``.
* ``tick`` is called every ``tick_interval_s`` seconds of driver time when that is not None,
  with every unfinished request the driver owns; it returns actions (possibly empty).
  Baseline policies have ``tick_interval_s = None`` and return ``()``.
* Time is ``now`` (seconds, monotonic, the driver's clock); randomness, if ever needed,
  comes from a seeded generator passed to the factory, never the global one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Action, Decision
from ascendra_proxy.core.request import RequestState

__all__ = ["Policy"]


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tick_interval_s(self) -> float | None: ...

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision: ...

    def on_finish(self, req: RequestState, now: float) -> None: ...

    def tick(
        self,
        now: float,
        requests: Sequence[RequestState],
        backends: Sequence[BackendSnapshot],
    ) -> Sequence[Action]: ...
