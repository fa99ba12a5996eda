"""Tight mean-TBT classes go where step times allow them [ours].

Theory of operation.  A stream's mean TBT is about the engine's step time while it
decodes, and a step that carries a full chunk of prefill lasts as long as the engine's
token budget makes it (vLLM's ``max_num_batched_tokens``): on an A100 with a 2,048-token
budget about 0.15 s, with a 512-token budget under 0.05 s.  Pools may have per-backend
engine settings, so an HP engine started with a small budget can serve a 50 ms class that
no LP engine can.

A request *fits* a backend when that backend's full mixed step (its current decodes plus
one chunk of its budget, from the analytical step model) is within the request's mean-TBT
SLO.  A request that fits no usable LP backend but fits an HP backend is *tight*: it goes
to the fitting HP backend (no ticket needed: it has nowhere better to go) that has room by
the LP room rule, the one where its first token comes soonest.  When none has room it goes
where the other rules send it (LP, usually): waiting for the small HP made the TTFT of the
whole tight class pay for HP's lower prefill throughput (simulator, three classes on Azure
conv at 20 req/s with a 512-token HP: 73.0% attainment when waiting).  With
``tbt_placement: false`` (or when no HP fits) requests go where the other rules send them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ascendra_proxy.core.decisions import Assign, Dispatch
from ascendra_proxy.core.policies.ascendra.actions import Reason
from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.lp import closest_lp, has_room
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.request import RequestState

__all__ = ["assign_tight", "fits", "place_tight", "tight_hp"]


def fits(ctx: Ctx, b: BackendState, req: RequestState) -> bool:
    return ctx.mixed_step_s(b) <= req.slo.tbt_s


def tight_hp(
    ctx: Ctx, req: RequestState, tr: Track, cands: Sequence[BackendState]
) -> list[BackendState] | None:
    """The HP backends ``req`` fits when it fits no LP one (None: it is not tight)."""
    if not ctx.params.tbt_placement:
        return None
    usable = [b for b in cands if b.usable(req.model, tr.exclude)]
    lp = [b for b in usable if b.is_lp]
    if not lp or any(fits(ctx, b, req) for b in lp):
        return None
    hp = [b for b in usable if b.is_hp and fits(ctx, b, req)]
    return hp or None


def place_tight(
    ctx: Ctx, req: RequestState, tr: Track, hp: Sequence[BackendState]
) -> BackendState | None:
    """The fitting HP backend with room where the first token comes soonest, if any."""
    roomy = [b for b in hp if has_room(b, ctx)]
    return closest_lp(ctx, roomy, req, tr)[0] if roomy else None


def assign_tight(ctx: Ctx, reqs: Mapping[str, RequestState], order: Sequence[str]) -> list[Assign]:
    """Bind held tight requests to fitting HP backends with room (the others stay held for
    LP late binding)."""
    out: list[Assign] = []
    if not ctx.params.tbt_placement:
        return out
    states = list(ctx.states.values())
    lp_steps = [ctx.mixed_step_s(b) for b in states if b.is_lp and b.snap.healthy]
    loosest = min(lp_steps, default=0.0)  # a TBT SLO at least this fits some LP step
    for rid in order:
        req, tr = reqs.get(rid), ctx.tracks.get(rid)
        if req is None or tr is None or rid in ctx.acted or req.slo.tbt_s >= loosest:
            continue
        hp = tight_hp(ctx, req, tr, states)
        b = None if hp is None else place_tight(ctx, req, tr, hp)
        if b is None:
            continue
        prio = ctx.priority(b, tr.key)
        ctx.send(req, tr, b, prio)
        out.append(Assign(rid, Dispatch(b.name, Reason.TBT_FIT, prio, "tight tbt")))
    return out
