"""The policy tick: periodic review of every in-flight request, and carrying out its actions.

Theory of operation: policies that declare ``tick_interval_s`` are called on that period with
every unfinished request and fresh backend snapshots; baselines declare None and this loop
never starts, unless the learned predictor records training rows (``proxy/learning.py``),
which then gets observation-only ticks.  The predictor's side (training rows, model reload,
retraining) sees each tick first, with the same requests and snapshots as the policy.
Actions name requests by id; one that finished in the meantime is skipped.

- ``Assign``: a request held in the proxy queue gets its backend (late binding).
- ``Move``: the current attempt is closed; the stream pump then takes the pending dispatch
  as its next attempt.  Before the first token this is an offload (invisible to the client).
  A mid-stream ``migrate`` makes the pump resume the stream token-exactly on the target
  (``StreamPump.resume``); one that cannot continue exactly (stop strings, ``n`` > 1, no
  prompt token ids yet) is refused and counted as ``migrate_unsupported``.
- ``Drop``: the request ends with the policy's ``Reject``.
- ``Warm``: the request's prompt goes to another backend as a separate one-token
  generation whose answer is discarded (it only fills that engine's prefix cache).
- ``SetRole``: roles are the policy's state; the proxy mirrors them for admin and metrics.
"""

from __future__ import annotations

import asyncio
import logging

from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.backends.continuation import plan
from ascendra_proxy.core.decisions import Action, Assign, Drop, Move, SetRole, Warm
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
        if learning is not None:
            try:
                learning.tick(now, states, snapshots)
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
    """Carry out one action; False when it no longer applies (or is not supported yet)."""
    if isinstance(action, SetRole):
        gw.roles[action.backend] = (action.role, action.draining)
        gw.telemetry.decision(action.reason)
        return True
    flight = gw.flights.get(action.request_id)
    if flight is None or flight.state.finished:
        return False
    if isinstance(action, Warm):
        gw.telemetry.decision(action.reason)
        return gw.warm(flight, action.backend, action.priority)
    if isinstance(action, Assign):
        if flight.attempt is not None:
            return False
        flight.pending = action.dispatch
        gw.telemetry.decision(action.dispatch.reason)
    elif isinstance(action, Move):
        if action.kind == "migrate" and flight.state.started and not can_migrate(flight):
            gw.telemetry.decision("migrate_unsupported")
            return False
        flight.pending = action.dispatch
        gw.telemetry.decision(action.dispatch.reason)
        if flight.attempt is not None:
            flight.begin_move(action.dispatch.reason)
            flight.attempt.close()
    elif isinstance(action, Drop):
        flight.dropped = action.reject
        gw.telemetry.decision(action.reject.reason)
        if flight.attempt is not None:
            flight.attempt.close()
    gw.capacity.notify()
    return True


def can_migrate(flight: Flight) -> bool:
    """Whether the started stream of ``flight`` has a token-exact continuation right now."""
    record, gen = flight.record, flight.gen
    if record is None or flight.attempt is None or flight.pending is not None:
        return False
    return plan(gen.body, gen.endpoint is Endpoint.CHAT, record, gen.max_tokens) is not None
