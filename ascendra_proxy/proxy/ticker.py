"""The policy tick: periodic review of every in-flight request, and carrying out its actions.

Theory of operation: policies that declare ``tick_interval_s`` are called on that period with
every unfinished request and fresh backend snapshots; baselines declare None and this loop
never starts, unless the learned predictor records training rows (``proxy/learning.py``),
which then gets observation-only ticks.  The gateway's lifecycle observer (the predictor's
training tap) sees each tick first, with the same requests and snapshots as the policy;
then the predictor's housekeeping runs (row flushes, model reload, retraining).

What each action means is decided in one place for every driver,
:func:`ascendra_proxy.core.driver.carry_out` (see its table); this module is the live
proxy's :class:`~ascendra_proxy.core.driver.ActionTarget`:

- ``assign``: the held request's ``flight.pending`` gets the dispatch; its ``_route`` wakes.
- ``move``: the current attempt is closed; the stream pump then takes the pending dispatch
  as its next attempt (before the first token an offload, invisible to the client; after
  it a token-exact continuation, ``StreamPump.resume``).  A started stream continues only
  when ``can_continue``: no stop strings, ``n`` = 1, prompt token ids known, an open
  attempt and no move pending (otherwise the core refuses: ``migrate_unsupported``).
- ``drop``: the request ends with the policy's ``Reject``.
- ``warm``: the request's prompt goes to another backend as a separate one-token
  generation whose answer is discarded (it only fills that engine's prefix cache).
- ``set_role``: roles are the policy's state; the proxy mirrors them for admin and metrics.
"""

from __future__ import annotations

import asyncio
import logging

from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.backends.continuation import plan
from ascendra_proxy.core.decisions import Action, Assign, Drop, Move, SetRole, Warm
from ascendra_proxy.core.driver import Carried, Effect, RequestFacts, carry_out
from ascendra_proxy.proxy.flight import Flight
from ascendra_proxy.proxy.gateway import Gateway

log = logging.getLogger(__name__)


async def run_ticks(gw: Gateway) -> None:
    learning = gw.learning
    policy_tick = gw.policy.tick_interval_s
    interval = policy_tick if policy_tick is not None else learning and learning.tick_s
    if not interval:
        return
    while True:
        await asyncio.sleep(interval)
        now = gw.clock()
        states = [f.state for f in gw.flights.values()]
        snapshots = gw.load.snapshots(now)
        try:
            if gw.observer is not None:
                gw.observer.on_tick(now, states, snapshots)
            if learning is not None:
                learning.tick(now)
        except Exception:
            log.exception("predictor tick failed")
        if policy_tick is None:
            continue
        try:
            actions = gw.policy.tick(now, states, snapshots)
        except Exception:
            log.exception("policy tick failed")
            continue
        for action in actions:
            apply_action(gw, action)


def apply_action(gw: Gateway, action: Action) -> bool:
    """Carry out one action; False when it no longer applies (or cannot be carried out)."""
    return carry(gw, action).applied


def carry(gw: Gateway, action: Action) -> Carried:
    """Carry out one action as the core's driver contract says, and count it."""
    carried = carry_out(action, ProxyTarget(gw))
    if carried.label is not None:
        gw.telemetry.decision(carried.label)
    if carried.effect in _CAPACITY_CHANGES:
        gw.capacity.notify()
    return carried


_CAPACITY_CHANGES = frozenset({Effect.ASSIGN, Effect.OFFLOAD, Effect.MIGRATE, Effect.DROP})


class ProxyTarget:
    """:class:`~ascendra_proxy.core.driver.ActionTarget` over the gateway's flights."""

    __slots__ = ("gw",)

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def facts(self, request_id: str) -> RequestFacts | None:
        flight = self.gw.flights.get(request_id)
        # a dropped flight is over for the policy: its pump only has to end it
        if flight is None or flight.state.finished or flight.dropped is not None:
            return None
        # a pending dispatch counts as the attempt it is about to become
        bound = flight.attempt is not None or flight.pending is not None
        return RequestFacts(started=flight.state.started, has_attempt=bound)

    def can_continue(self, request_id: str) -> bool:
        return can_migrate(self.gw.flights[request_id])

    def assign(self, action: Assign) -> None:
        self.gw.flights[action.request_id].pending = action.dispatch

    def move(self, action: Move, effect: Effect) -> None:
        flight = self.gw.flights[action.request_id]
        flight.pending = action.dispatch
        if flight.attempt is not None:
            flight.begin_move(action.dispatch.reason)
            flight.attempt.close()

    def drop(self, action: Drop) -> None:
        flight = self.gw.flights[action.request_id]
        flight.dropped = action.reject
        if flight.attempt is not None:
            flight.attempt.close()

    def warm(self, action: Warm) -> bool:
        flight = self.gw.flights[action.request_id]
        return self.gw.warm(flight, action.backend, action.priority)

    def set_role(self, action: SetRole) -> None:
        self.gw.roles[action.backend] = (action.role, action.draining)


def can_migrate(flight: Flight) -> bool:
    """Whether the started stream of ``flight`` has a token-exact continuation right now."""
    record, gen = flight.record, flight.gen
    if record is None or flight.attempt is None or flight.pending is not None:
        return False
    return plan(gen.body, gen.endpoint is Endpoint.CHAT, record, gen.max_tokens) is not None
