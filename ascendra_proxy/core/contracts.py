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

What a policy uses beyond that is declared, not guessed: its registry entry
(``core/policies/registry.py``) gives :class:`PolicyNeeds` for its parameters, and drivers,
the demo, ``check-config`` and the predictor set-up read that instead of checking the
policy's name.  Latency profiles (step-time models) come in as values: a policy that needs
them gets them from its driver through the factory, which loads them (core reads no files).

A policy whose slack predictor can be swapped implements :class:`SwapPredictor`.  Drivers
report each request's lifecycle to a :class:`LifecycleObserver`; what an action means is
``core/driver.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Action, Decision
from ascendra_proxy.core.predict import SlackPredictor
from ascendra_proxy.core.request import Outcome, RequestState

__all__ = [
    "LifecycleObserver",
    "Policy",
    "PolicyNeeds",
    "PredictorNeeds",
    "SwapPredictor",
    "swaps_predictor",
]


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


@runtime_checkable
class SwapPredictor(Protocol):
    """A policy whose slack predictor can be swapped (the learned model, or back to None:
    its own analytical model); ``predictor_source`` names the one answering."""

    @property
    def predictor_source(self) -> str: ...

    def use_predictor(self, predictor: SlackPredictor | None) -> None: ...


def swaps_predictor(policy: object) -> TypeGuard[SwapPredictor]:
    return isinstance(policy, SwapPredictor)


@dataclass(frozen=True, slots=True)
class PredictorNeeds:
    """How a policy uses a slack predictor; a learned model falls back on the analytical
    one built with these, so that answering from the fallback changes nothing."""

    fallback_step_s: float  # step time for a backend without a latency profile
    max_scrape_age_s: float  # scraped engine load older than this is not used


@dataclass(frozen=True, slots=True)
class PolicyNeeds:
    """What a policy (with given parameters) uses from its drivers and its config."""

    # Reads pool roles (lp/hp/mixed); False: roles mean nothing to it, and a run that
    # compares it with a role-aware policy shows every backend as mixed.
    roles: bool = False
    # Has a slack predictor to swap (implements SwapPredictor); None: none.
    predictor: PredictorNeeds | None = None
    # Reads ``RequestState.prefix_hashes`` (prompt block hashes), indexing this many blocks
    # per backend; None: ignores them.
    prefix_blocks_per_backend: int | None = None
    # Orders or places requests by their SLO class / per-request SLO beyond the default.
    slo_classes: bool = False
    # Wants ``tick`` called every this many seconds; None: route-only.
    tick_s: float | None = None
    # Wants the backends' latency profiles (step-time models) from the driver.
    latency_profiles: bool = False


class LifecycleObserver(Protocol):
    """What happens to each request, as every driver reports it (training rows, traces).

    Calls come in the driver's order of events: ``on_tick`` with the requests and snapshots
    a policy tick is about to see (also without a policy tick, when the driver runs
    observation ticks); ``on_dispatched`` when an attempt is sent (``replaced``: the request
    had an attempt before, so this is a retry, offload or migration); ``on_tokens`` for
    tokens of the current attempt as they reach the driver (a closed attempt's or a
    warm-up's never count); ``on_answer`` for an answer that came whole (no token times);
    ``on_finished`` exactly once, when the request ends."""

    def on_tick(
        self, now: float, requests: Sequence[RequestState], snapshots: Sequence[BackendSnapshot]
    ) -> None: ...

    def on_dispatched(
        self, request_id: str, backend: str, priority: int | None, replaced: bool
    ) -> None: ...

    def on_tokens(self, request_id: str, now: float, n: int, backend: str) -> None: ...

    def on_answer(self, request_id: str, now: float, n: int, backend: str) -> None: ...

    def on_finished(self, request_id: str, outcome: Outcome) -> None: ...
