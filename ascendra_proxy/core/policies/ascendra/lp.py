"""Low-priority pool rules: room, choice, and late binding of the held EDF queue.

Theory of operation.

* **Room** [ours]: in ``proxy_queue`` mode an LP backend takes another request while the
  proxy has fewer than ``lp_queue_steps * max_num_batched_tokens`` prompt tokens dispatched
  there without a first token (enough to fill the engine's next steps, short enough that
  the proxy, not the engine, decides the order) and it runs fewer than ``max_num_seqs``.
  In ``engine_priority`` mode only the sequence limit applies: the engine orders its own
  queue by the deadline priorities the proxy sends.
* **Choice** [ours]: the backend with the fewest queued prompt tokens, then the fewest
  in-flight requests, then the first in snapshot order.
* **Late binding** (each tick): walk the held queue in EDF order (requests already past
  their latest start last, see ``lp_infeasible_last``) and bind each request to
  the LP backend chosen above among those with room, until no LP backend has room.  A
  request whose model has no LP room is skipped (the others behind it may still fit).
* **Tickets for held requests** [paper rule, our placement]: after binding, every HP
  backend that grants a ticket (see :mod:`.hp`) takes the most urgent held request of its
  model, so HP capacity that the ticket rule frees goes to the earliest deadline, not to
  whichever request arrives next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ascendra_proxy.core.decisions import Assign, Dispatch
from ascendra_proxy.core.policies.ascendra.actions import Reason
from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.hp import ticket_refusal
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.request import RequestState

__all__ = ["assign_held", "has_room", "least_queued", "serving_order", "tickets_for_held"]


def serving_order(ctx: Ctx) -> list[str]:
    """Held ids in the order LP serves them (EDF; infeasible last unless configured not to)."""
    return ctx.held.serving_order(ctx.now, ctx.params.lp_infeasible_last)


def has_room(b: BackendState, ctx: Ctx) -> bool:
    if b.running(ctx.max_age) >= b.max_num_seqs:
        return False
    if ctx.params.lp_ordering == "engine_priority":
        return True
    return b.queued_tokens < ctx.params.lp_queue_steps * b.facts.max_num_batched_tokens


def least_queued(cands: Sequence[BackendState]) -> BackendState:
    """Fewest queued prompt tokens, then fewest in flight, then first listed."""
    best = cands[0]
    for b in cands[1:]:
        if (b.queued_tokens, b.inflight) < (best.queued_tokens, best.inflight):
            best = b
    return best


def assign_held(ctx: Ctx, reqs: Mapping[str, RequestState]) -> None:
    """Bind held requests, EDF first, to LP backends with room."""
    lp = [b for b in ctx.states.values() if b.is_lp and b.snap.healthy and not b.draining]
    reason = Reason.LP_PRIORITY if ctx.params.lp_ordering == "engine_priority" else Reason.LP_ROOM
    for rid in serving_order(ctx):
        roomy = [b for b in lp if has_room(b, ctx)]
        if not roomy:
            return
        req, tr = reqs.get(rid), ctx.tracks.get(rid)
        if req is None or tr is None or rid in ctx.acted:
            continue
        cands = [b for b in roomy if b.usable(req.model, tr.exclude)]
        if not cands:
            continue
        b = least_queued(cands)
        prio = ctx.priority(b, tr.key)
        ctx.send(req, tr, b, prio)
        ctx.actions.append(Assign(rid, Dispatch(b.name, reason, prio, "edf late binding")))


def tickets_for_held(ctx: Ctx, reqs: Mapping[str, RequestState]) -> None:
    """Each HP backend that grants a ticket takes the most urgent held request it can."""
    for b in ctx.states.values():
        if not len(ctx.held):
            return
        if not b.is_hp or ticket_refusal(b, ctx.params.ticket, ctx.max_age) is not None:
            continue
        for rid in serving_order(ctx):
            req, tr = reqs.get(rid), ctx.tracks.get(rid)
            if req is None or tr is None or not b.usable(req.model, tr.exclude):
                continue
            prio = ctx.priority(b, tr.key)
            ctx.send(req, tr, b, prio)
            ctx.actions.append(Assign(rid, Dispatch(b.name, Reason.HP_TICKET, prio, "held head")))
            break
