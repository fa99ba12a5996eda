"""The offload, warming and shedding rules over the review's held and not-started rows.

Theory of operation.  Each held or not-started LP request is judged at the position it
will be served from (:mod:`.order` has corrected the held rows' predicted times)::

    predicted:  now + predicted_ttft                     + Δ > ttft_deadline
    paper:      now + max(T̂(backend step), est_prefill)  + Δ > ttft_deadline

with ``Δ = min(offload.margin_s, offload.margin_max_frac * ttft_slo)``.  Such a request is
*at risk*.  At-risk requests are offloaded to HP in the order HP serves them [paper]:
feasible ones (first token still expected in time on the best HP) by latest start, then
infeasible ones (only with ``offload.infeasible``), which get an engine priority behind all
feasible work.  Each picks the HP backend with the least predicted TTFT (expected prefix
hit included), counting the prefill of offloads already placed in this tick.

An at-risk request that no HP backend can serve in time (or whose model has no HP) is
judged by the admission rule (:func:`ascendra_proxy.core.admission.admission`) with its
best predicted TTFT over LP and HP: if its class opted in to refusal and no backend of its
model is idle, it is dropped with a 429 whose ``Retry-After`` is that predicted wait;
otherwise it stays where it is (a held one already sorts last, see :mod:`.order`).

Requests not at risk whose slack fell below ``Δ + warming.lead_s`` are warmed on the HP
backend they would go to, when warming is on and that backend has headroom: nothing waits
on it, and it runs few enough sequences to take a migrated stream.  Warm-ups go at the
engine's lowest priority.  Every rule returns its actions; none appends to shared state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ascendra_proxy.core.admission import Verdict, admission, shed
from ascendra_proxy.core.deadline import PRIORITY_MAX
from ascendra_proxy.core.decisions import Action, Dispatch, Drop, Move, Warm
from ascendra_proxy.core.policies.ascendra.actions import Reason
from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.hp import accepts_migration, pick
from ascendra_proxy.core.policies.ascendra.review import Review, Row
from ascendra_proxy.core.policies.ascendra.targets import Option, evaluate_targets
from ascendra_proxy.core.policies.ascendra.view import BackendState

__all__ = ["Pending", "hp_candidates", "offload_warm_shed"]


@dataclass(frozen=True, slots=True)
class Pending:
    """A held or not-started request as the offload rule sees it."""

    row: Row
    source: BackendState | None  # the LP backend it waits on (None: held in the proxy)
    ttft_s: float  # predicted time to its first token where it waits
    est_s: float  # the estimate the offload rule compares (see the module doc)
    room_s: float  # deadline - now - Δ

    @property
    def at_risk(self) -> bool:
        return self.est_s > self.room_s


def hp_candidates(ctx: Ctx) -> dict[str, list[BackendState]]:
    """Usable HP backends per model (healthy, not draining)."""
    out: dict[str, list[BackendState]] = {}
    for b in ctx.states.values():
        if b.is_hp and b.snap.healthy and not b.draining:
            out.setdefault(b.snap.model, []).append(b)
    return out


def _pending(ctx: Ctx, rv: Review) -> list[Pending]:
    op = ctx.params.offload
    step_now: dict[str, float] = {}
    if op.rule == "paper":
        for b in ctx.states.values():
            c = ctx.analytical.costs(b.features())
            step_now[b.name] = c.s_mix if c.pending_tokens > 0 else c.s_dec
    out = []
    for group, waits_on_backend in ((rv.held, False), (rv.unstarted, True)):
        for row, ttft in zip(group.rows, group.ttft_s.tolist(), strict=True):
            r = row.req
            margin = min(op.margin_s, op.margin_max_frac * r.slo.ttft_s)
            est = (
                ttft
                if op.rule == "predicted"
                else max(step_now[row.backend.name], row.track.est_prefill)
            )
            room = r.ttft_deadline - ctx.now - margin
            out.append(Pending(row, row.backend if waits_on_backend else None, ttft, est, room))
    return out


def offload_warm_shed(ctx: Ctx, rv: Review) -> list[Action]:
    """Offloads, warm-ups and refusals for the review's held and not-started rows."""
    pending = _pending(ctx, rv)
    if not pending:
        return []
    hp = hp_candidates(ctx)
    at_risk = [p for p in pending if p.at_risk]
    offer = [p for p in at_risk if p.row.req.model in hp]
    warm = _warm_candidates(ctx, pending, hp) if ctx.params.warming.enabled else []
    options = evaluate_targets(
        ctx,
        [(p.row.req, p.row.track) for p in offer + warm],
        lambda r, t: [b for b in hp[r.model] if b.name not in t.exclude],
        ctx.params.migration.horizon_tokens,
    )
    actions, unplaced = _offload(ctx, offer, options[: len(offer)])
    actions += _warm(ctx, warm, options[len(offer) :])
    no_hp = [(p, p.ttft_s) for p in at_risk if p.row.req.model not in hp]
    actions += _shed(ctx, no_hp + unplaced)
    return actions


def _offload(
    ctx: Ctx, offer: list[Pending], options: list[list[Option]]
) -> tuple[list[Action], list[tuple[Pending, float]]]:
    """Offload moves, and the requests left where they are with their best predicted TTFT."""
    now = ctx.now
    ranked = []
    unplaced: list[tuple[Pending, float]] = []
    for p, opts in zip(offer, options, strict=True):
        if not opts:
            unplaced.append((p, p.ttft_s))
            continue
        best_hp = min(o.ttft_s for o in opts)
        feasible = now + best_hp <= p.row.req.ttft_deadline
        ranked.append((not feasible, p.row.track.order, p, opts, best_hp))
    ranked.sort(key=lambda x: (x[0], x[1]))
    added: dict[str, float] = {}
    actions: list[Action] = []
    for infeasible, _order, p, opts, best_hp in ranked:
        if infeasible and not ctx.params.offload.infeasible:
            unplaced.append((p, min(best_hp, p.ttft_s)))
            continue
        times = [o.ttft_s + added.get(o.backend.name, 0.0) for o in opts]
        k = 0 if len(opts) == 1 else pick([o.backend for o in opts], times, _hits(opts))
        target = opts[k].backend
        added[target.name] = added.get(target.name, 0.0) + p.row.track.est_prefill
        actions.append(_offload_move(ctx, p, opts[k], infeasible))
    return actions, unplaced


def _hits(opts: Sequence[Option]) -> list[int]:
    return [o.hit_tokens for o in opts]


def _offload_move(ctx: Ctx, p: Pending, option: Option, infeasible: bool) -> Move:
    r, tr, target = p.row.req, p.row.track, option.backend
    prio = ctx.priority(target, tr.key, infeasible)
    ctx.send(r, tr, target, prio, p.source, option.hit_tokens)
    tr.offloaded = True
    detail = (
        f"from={p.source.name if p.source else 'queue'} waited={ctx.now - r.arrival:.3f}s "
        f"pred_hp={option.ttft_s:.3f}s{' infeasible' if infeasible else ''}"
    )
    return Move(r.id, Dispatch(target.name, Reason.OFFLOAD_TTFT, prio, detail), "offload")


def _idle_models(ctx: Ctx) -> set[str]:
    """Models with a healthy backend that has nothing in flight (the admission rule's
    'never refuse while an engine is idle')."""
    return {
        b.snap.model
        for b in ctx.states.values()
        if b.snap.healthy and not b.draining and b.inflight == 0 and b.unstarted == 0
    }


def _shed(ctx: Ctx, late: list[tuple[Pending, float]]) -> list[Action]:
    """Refuse the late requests whose class opted in (the admission rule)."""
    if not late:
        return []
    idle = _idle_models(ctx)
    actions: list[Action] = []
    for p, best_ttft in late:
        r = p.row.req
        if r.id in ctx.acted:
            continue
        if admission(r, ctx.now, best_ttft, r.model in idle) is not Verdict.REFUSE:
            continue
        if p.source is not None:
            p.source.remove(r.prompt_tokens, p.row.track.cached_tokens, started=False)
        ctx.held.remove(r.id)
        ctx.acted.add(r.id)
        actions.append(Drop(r.id, shed(r, ctx.now, best_ttft)))
    return actions


def _idle_queue(b: BackendState, max_age_s: float) -> bool:
    """Nothing waits on ``b`` (the proxy's not-started work, the engine's waiting queue).

    A warm-up runs at the lowest priority: sent to an HP with a queue it would sit in that
    queue (blocking HP's ticket) or, run, take prefill time from the offloads it is for."""
    return b.unstarted == 0 and b.queued_tokens == 0 and b.engine_waiting(max_age_s) == 0


def _warm_candidates(
    ctx: Ctx, pending: list[Pending], hp: dict[str, list[BackendState]]
) -> list[Pending]:
    wp = ctx.params.warming
    return [
        p
        for p in pending
        if not p.at_risk
        and p.room_s - p.est_s < wp.lead_s
        and p.row.track.warmed is None
        and p.row.track.prefix
        and p.row.req.prompt_tokens >= wp.min_prompt_tokens
        and p.row.req.model in hp
    ]


def _warm(ctx: Ctx, warm: list[Pending], options: list[list[Option]]) -> list[Action]:
    wp, mp = ctx.params.warming, ctx.params.migration
    actions: list[Action] = []
    for p, opts in zip(warm, options, strict=True):
        if len(actions) >= wp.max_per_tick:
            break
        r, tr = p.row.req, p.row.track
        ok = [
            o
            for o in opts
            if _idle_queue(o.backend, ctx.max_age)
            and accepts_migration(
                o.backend, mp.hp_running_frac, ctx.params.ticket.kv_free, ctx.max_age
            )
            and o.hit_tokens < r.prompt_tokens // 2
        ]
        if not ok:
            continue
        b = ok[pick([o.backend for o in ok], [o.ttft_s for o in ok], _hits(ok))].backend
        ctx.note_warm(b, tr, r.prompt_tokens)
        # behind all real work there: a warm-up only fills the prefix cache ahead of need
        prio = PRIORITY_MAX if b.facts.priority_scheduling else None
        detail = f"slack<{wp.lead_s}s+margin"
        actions.append(Warm(r.id, b.name, Reason.WARM_SLACK, detail, prio))
    return actions
