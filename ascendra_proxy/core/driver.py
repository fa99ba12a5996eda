"""The driver contract: what each policy action means, decided once for every driver.

Theory of operation
===================

A policy (``core/contracts.py``) returns values: a :data:`~.decisions.Decision` from
``route`` and :data:`~.decisions.Action` values from ``tick``.  Something must carry them
out: the live proxy (``proxy/ticker.py`` over ``proxy/gateway.py``), the simulator
(``sim/proxy.py``), and later a stream worker that receives actions from a scheduler in
another process.  Each of them owns its requests' plumbing (sockets or simulated engines)
but none of them decides what an action *means*: :func:`carry_out` does, here, and calls
the driver back through :class:`ActionTarget` for the primitive effects.

The table (``facts`` are the owning driver's :class:`RequestFacts` at the moment the
action arrives; the first matching row wins):

=================  ==============================  ========================================
action             request facts                   effect (``Carried``)
=================  ==============================  ========================================
``SetRole``        (not about a request)           ``role``: the driver mirrors it
any other          not owned, or finished          skip ``finished``
``Warm``           owned                           ``warm``: prompt to ``backend`` as a
                                                   discarded one-token generation
``Assign``         has an attempt                  skip ``dispatched``
``Assign``         no attempt (held)               ``assign``: bind it to the dispatch
``Move``           has tokens, and no exact        skip ``migrate_unsupported`` (stop
                   continuation now                strings, ``n`` > 1, an attempt or move
                                                   already under way, no prompt ids)
``Move``           has tokens                      ``migrate``: close the attempt, continue
                                                   token-exactly on the target
``Move``           no tokens                       ``offload``: close the attempt (if any),
                                                   send the whole request to the target
``Drop``           owned                           ``drop``: end it with the ``Reject``
=================  ==============================  ========================================

A ``Move``'s own ``kind`` is what the policy saw; the effect follows the facts when the
action is carried out (an offload whose first token arrived meanwhile is a migration).
:attr:`Carried.label` is what a driver counts as a decision (the action's reason; a
refused migration counts as ``migrate_unsupported``; skips of finished or already
dispatched requests count nothing).

Lifecycle events.  Drivers report what happens to each request to one
:class:`~.contracts.LifecycleObserver` (the predictor's training tap, traces): each tick's
view before the policy sees it, each dispatch (and whether it replaced an attempt), token
arrivals, an answer that came whole, and the single end.  :class:`ObserverFanout` lets a
driver hand the same events to several observers.

Out of process.  Every value here is plain data, and the facts and effects are those of
the process that owns the request's stream: a scheduler sends actions (and sees only
request metadata), a stream worker runs :func:`carry_out` against its own flights and
reports the result and the lifecycle events back.  The split therefore cannot change what
an action means.  ``core/wire.py`` gives the decisions, actions and results as plain,
language-neutral mappings for that hop.

What ``route``'s decisions mean is shared too: ``Dispatch`` sends the request (with
:func:`engine_priority`), ``Reject`` ends it with that error, and ``Hold`` parks it in the
driver's queue (:class:`HoldLimits`): refused with 429 ``queue_full`` when the queue is
full, ended with 504 ``queue_timeout`` once it has waited the first-byte budget (from its
arrival; a started stream from when it was held); otherwise it asks the policy again at
least every :data:`HOLD_RECHECK_S` (and whenever capacity changes).  Drivers count each
decision once, by its reason: ``Dispatch`` and ``Reject`` when taken, ``Hold`` when the
request is parked (not at every re-ask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot
from ascendra_proxy.core.contracts import LifecycleObserver
from ascendra_proxy.core.decisions import Action, Assign, Drop, Move, SetRole, Warm
from ascendra_proxy.core.request import Outcome, RequestState

__all__ = [
    "HOLD_RECHECK_S",
    "ActionTarget",
    "Carried",
    "Effect",
    "HoldLimits",
    "ObserverFanout",
    "RequestFacts",
    "Skip",
    "carry_out",
    "engine_priority",
    "hold_recheck_s",
    "interpret",
]

HOLD_RECHECK_S = 0.05  # a held request asks again at least this often (seconds)


def hold_recheck_s(tick_interval_s: float | None) -> float:
    """How often a held request re-asks the policy: its tick, at most HOLD_RECHECK_S."""
    return min(tick_interval_s or HOLD_RECHECK_S, HOLD_RECHECK_S)


def engine_priority(info: BackendInfo, priority: int | None) -> int | None:
    """The priority to send to this engine: none unless it runs priority scheduling
    (vLLM rejects a non-zero priority otherwise)."""
    return priority if info.priority_scheduling else None


@dataclass(frozen=True, slots=True)
class HoldLimits:
    """Where a ``Hold`` ends: the queue's size and how long a held request may wait."""

    max_queued: int  # held requests at most (``limits.max_queued_requests``)
    wait_s: float  # the first-byte budget (``timeouts.first_byte_s``)
    # their prompt tokens together at most (``limits.max_queued_prompt_tokens``; None: no cap)
    max_queued_prompt_tokens: int | None = None

    def room(self, held: int) -> bool:
        """Whether one more request may be parked while ``held`` are."""
        return held < self.max_queued

    def token_room(self, held_tokens: int, prompt_tokens: int) -> bool:
        """Whether a request of ``prompt_tokens`` may be parked beside ``held_tokens``."""
        cap = self.max_queued_prompt_tokens
        return cap is None or held_tokens + prompt_tokens <= cap

    def expired(self, waited_s: float) -> bool:
        """Whether a request held this long ends (504 ``queue_timeout``)."""
        return waited_s >= self.wait_s


class Effect(Enum):
    ASSIGN = "assign"
    OFFLOAD = "offload"
    MIGRATE = "migrate"
    DROP = "drop"
    WARM = "warm"
    ROLE = "role"
    SKIP = "skip"


class Skip(Enum):
    FINISHED = "finished"  # the request ended (or was never the driver's)
    DISPATCHED = "dispatched"  # an Assign for a request that already has an attempt
    MIGRATE_UNSUPPORTED = "migrate_unsupported"  # no token-exact continuation now
    UNKNOWN_BACKEND = "unknown_backend"  # a warm-up for a backend the driver lacks


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the owning driver knows about one unfinished request when an action arrives."""

    started: bool  # its first token arrived (a move is then a migration)
    # It is bound to a backend: an attempt is open, or a dispatch for it is under way (an
    # earlier action of the same instant); False while held or between attempts.
    has_attempt: bool


@dataclass(frozen=True, slots=True)
class Carried:
    """What became of one action."""

    action: Action
    effect: Effect
    skip: Skip | None = None

    @property
    def applied(self) -> bool:
        return self.skip is None

    @property
    def label(self) -> str | None:
        """The decision label a driver counts (None: count nothing)."""
        if self.skip is Skip.MIGRATE_UNSUPPORTED:
            return Skip.MIGRATE_UNSUPPORTED.value
        if self.skip is not None:
            return None
        return action_reason(self.action)


def action_reason(action: Action) -> str:
    """The reason an action carries (the label it is counted under)."""
    if isinstance(action, Assign | Move):
        return action.dispatch.reason
    if isinstance(action, Drop):
        return action.reject.reason
    return action.reason


class ActionTarget(Protocol):
    """A driver's side of the contract: facts about its requests and the primitive effects.

    :func:`carry_out` calls at most one effect method per action, only after checking the
    facts, so an implementation only does the plumbing (and raises for a policy bug, such
    as an unknown backend, the way it treats such a bug elsewhere)."""

    def facts(self, request_id: str) -> RequestFacts | None:
        """None when the driver owns no unfinished request of that id (one already
        dropped, whose end is still under way, counts as finished)."""
        ...

    def can_continue(self, request_id: str) -> bool:
        """Whether the started request has a token-exact continuation right now."""
        ...

    def assign(self, action: Assign) -> None:
        """Send the held request to ``action.dispatch``."""
        ...

    def move(self, action: Move, effect: Effect) -> None:
        """Close the current attempt (if any) and dispatch again; ``effect`` is OFFLOAD
        (the whole request) or MIGRATE (the token-exact continuation)."""
        ...

    def drop(self, action: Drop) -> None:
        """End the request with ``action.reject``."""
        ...

    def warm(self, action: Warm) -> bool:
        """Send the prompt as a discarded one-token generation; False: no such backend."""
        ...

    def set_role(self, action: SetRole) -> None: ...


def interpret(action: Action, facts: RequestFacts | None, continuable: bool) -> Carried:
    """The table of the module docstring, as a pure function of the facts."""
    if isinstance(action, SetRole):
        return Carried(action, Effect.ROLE)
    if facts is None:
        return Carried(action, Effect.SKIP, Skip.FINISHED)
    if isinstance(action, Assign):
        if facts.has_attempt:
            return Carried(action, Effect.SKIP, Skip.DISPATCHED)
        return Carried(action, Effect.ASSIGN)
    if isinstance(action, Move):
        if not facts.started:
            return Carried(action, Effect.OFFLOAD)
        if not continuable:
            return Carried(action, Effect.SKIP, Skip.MIGRATE_UNSUPPORTED)
        return Carried(action, Effect.MIGRATE)
    if isinstance(action, Drop):
        return Carried(action, Effect.DROP)
    return Carried(action, Effect.WARM)


def carry_out(action: Action, target: ActionTarget) -> Carried:
    """Decide what ``action`` means for ``target``'s request and have the target do it."""
    rid = getattr(action, "request_id", None)
    facts = None if rid is None else target.facts(rid)
    needs_continuation = isinstance(action, Move) and facts is not None and facts.started
    continuable = needs_continuation and rid is not None and target.can_continue(rid)
    carried = interpret(action, facts, continuable)
    if not carried.applied:
        return carried
    if isinstance(action, SetRole):
        target.set_role(action)
    elif isinstance(action, Assign):
        target.assign(action)
    elif isinstance(action, Move):
        target.move(action, carried.effect)
    elif isinstance(action, Drop):
        target.drop(action)
    elif not target.warm(action):
        return Carried(action, Effect.SKIP, Skip.UNKNOWN_BACKEND)
    return carried


class ObserverFanout:
    """One :class:`~.contracts.LifecycleObserver` that hands every event to several."""

    __slots__ = ("observers",)

    def __init__(self, observers: Sequence[LifecycleObserver]) -> None:
        self.observers = tuple(observers)

    def on_tick(
        self, now: float, requests: Sequence[RequestState], snapshots: Sequence[BackendSnapshot]
    ) -> None:
        for o in self.observers:
            o.on_tick(now, requests, snapshots)

    def on_dispatched(
        self, request_id: str, backend: str, priority: int | None, replaced: bool
    ) -> None:
        for o in self.observers:
            o.on_dispatched(request_id, backend, priority, replaced)

    def on_tokens(self, request_id: str, now: float, n: int, backend: str) -> None:
        for o in self.observers:
            o.on_tokens(request_id, now, n, backend)

    def on_answer(self, request_id: str, now: float, n: int, backend: str) -> None:
        for o in self.observers:
            o.on_answer(request_id, now, n, backend)

    def on_finished(self, request_id: str, outcome: Outcome) -> None:
        for o in self.observers:
            o.on_finished(request_id, outcome)
