"""Low-priority pool rules: room, choice, and late binding of the held EDF queue.

Theory of operation.

* **Room** [ours]: in ``proxy_queue`` mode an LP backend takes another request while the
  proxy has fewer than ``lp_queue_steps * max_num_batched_tokens`` prompt tokens *to
  prefill* dispatched there without a first token (enough to fill the engine's next steps,
  short enough that the proxy, not the engine, decides the order) and it runs fewer than
  ``max_num_seqs``.  Tokens the policy expects in the engine's prefix cache are not
  counted: they cost no prefill step, and counting them let one request with a long shared
  system prompt fill a backend's room alone.  In ``engine_priority`` mode only the
  sequence limit applies: the engine orders its own queue by the deadline priorities.
* **Choice** [ours, prefix-aware]: the backend where the request's first token comes
  soonest: ``(queued work + the request's own uncached tokens) x seconds per prefill
  token`` there (the expected prefix hit, from the proxy's prefix index, traded against
  the queue in the same unit; the time per token is a full mixed step's over its chunk,
  so an engine decoding many sequences counts as slower), then the fewest in-flight
  requests, then snapshot order.
  A conversation's next turn, or a request sharing a system prompt, thus follows the
  engine that holds its prefix until that engine's queue outweighs the prefill it saves,
  and never to an engine without room (overloaded).
* **Late binding** (each tick): walk the held queue in serving order (EDF; requests
  that cannot make their deadline last, see :mod:`.order`) and bind each request to
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
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.request import RequestState

__all__ = [
    "assign_held",
    "closest_lp",
    "has_room",
    "least_queued",
    "tickets_for_held",
]


def has_room(b: BackendState, ctx: Ctx) -> bool:
    if b.running(ctx.max_age) >= b.max_num_seqs:
        return False
    if ctx.params.lp_ordering == "engine_priority":
        return True
    return b.queued_work < ctx.params.lp_queue_steps * b.facts.max_num_batched_tokens


def least_queued(cands: Sequence[BackendState]) -> BackendState:
    """Fewest prompt tokens to prefill queued, then fewest in flight, then first listed."""
    best = cands[0]
    for b in cands[1:]:
        if (b.queued_work, b.inflight) < (best.queued_work, best.inflight):
            best = b
    return best


def closest_lp(
    ctx: Ctx, cands: Sequence[BackendState], req: RequestState, tr: Track
) -> tuple[BackendState, int]:
    """The candidate where ``req``'s first token comes soonest: its prefill work there
    (the queue plus its own uncached tokens) at that engine's time per prefill token,
    which grows with the sequences it decodes; then fewest in flight, then first listed.
    Also returns the expected prefix hit there."""
    best, best_hit = cands[0], 0
    best_key = (0.0, 0)
    own = req.prompt_tokens + req.tokens
    for i, b in enumerate(cands):
        hit = min(ctx.hit_tokens(b, tr), own)
        key = ((b.queued_work + own - hit) * ctx.prefill_token_s(b), b.inflight)
        if i == 0 or key < best_key:
            best, best_hit, best_key = b, hit, key
    return best, best_hit


def assign_held(ctx: Ctx, reqs: Mapping[str, RequestState], order: Sequence[str]) -> list[Assign]:
    """Bind held requests, in serving ``order``, to LP backends with room."""
    lp = [b for b in ctx.states.values() if b.is_lp and b.snap.healthy and not b.draining]
    reason = Reason.LP_PRIORITY if ctx.params.lp_ordering == "engine_priority" else Reason.LP_ROOM
    out: list[Assign] = []
    roomy = [b for b in lp if has_room(b, ctx)]  # changes only when a request is sent
    for rid in order:
        if not roomy:
            break
        req, tr = reqs.get(rid), ctx.tracks.get(rid)
        if req is None or tr is None or rid in ctx.acted:
            continue
        cands = [b for b in roomy if b.usable(req.model, tr.exclude)]
        if not cands:
            continue
        b, hit = closest_lp(ctx, cands, req, tr)
        prio = ctx.priority(b, tr.key)
        ctx.send(req, tr, b, prio, hit_tokens=hit)
        if not has_room(b, ctx):
            roomy.remove(b)
        out.append(Assign(rid, Dispatch(b.name, reason, prio, f"edf late binding hit={hit}")))
    return out


def tickets_for_held(
    ctx: Ctx, reqs: Mapping[str, RequestState], order: Sequence[str]
) -> list[Assign]:
    """Each HP backend that grants a ticket takes the first held request, in serving
    ``order``, that it can serve."""
    out: list[Assign] = []
    for b in ctx.states.values():
        if not len(ctx.held):
            break
        if not b.is_hp or ticket_refusal(b, ctx.params.ticket, ctx.max_age) is not None:
            continue
        for rid in order:
            req, tr = reqs.get(rid), ctx.tracks.get(rid)
            if req is None or tr is None or rid in ctx.acted:
                continue
            if not b.usable(req.model, tr.exclude):
                continue
            prio = ctx.priority(b, tr.key)
            ctx.send(req, tr, b, prio)
            out.append(Assign(rid, Dispatch(b.name, Reason.HP_TICKET, prio, "held head")))
            break
    return out
