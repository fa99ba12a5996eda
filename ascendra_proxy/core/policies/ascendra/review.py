"""The monitor tick's review of LP-side requests: one predictor call, then offload and warm.

Theory of operation.  :func:`collect` builds one batch of questions:

* every **held** request, as if dispatched now to the LP backend with the fewest queued
  tokens for its model, behind that backend's queue plus its share of the held prompt
  tokens ahead of it in EDF order (spread over the model's usable LP backends);
* every **not-started** request on a healthy LP backend, behind the prompt tokens queued
  before it in that engine's order (priority then dispatch time with priority scheduling,
  dispatch time otherwise), with its expected cache hit;
* every **streaming** request on a healthy LP backend that could still be migrated
  (resident rows: its next tokens there), for :mod:`.migrate`.

:func:`offload_and_warm` then applies the offload rule to the first two groups::

    predicted:  now + predicted_ttft                     + Δ > ttft_deadline
    paper:      now + max(T̂(backend step), est_prefill)  + Δ > ttft_deadline

with ``Δ = min(offload.margin_s, offload.margin_max_frac * ttft_slo)``.  Offloads are
ordered as HP serves them [paper]: feasible ones (first token still expected in time on
the best HP) by latest start, then infeasible ones, which get an engine priority behind
all feasible work.  Each picks the HP backend with the least predicted TTFT (expected
prefix hit included), counting the prefill of offloads already placed in this tick.
Requests not offloaded whose slack fell below ``Δ + warming.lead_s`` are warmed on the HP
backend they would go to, when warming is on and that backend has headroom: nothing waits
on it, and it runs few enough sequences to take a migrated stream.  Warm-ups go at the
engine's lowest priority.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ascendra_proxy.core.deadline import PRIORITY_MAX
from ascendra_proxy.core.decisions import Dispatch, Move
from ascendra_proxy.core.policies.ascendra.actions import Reason, Warm
from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.hp import accepts_migration, pick
from ascendra_proxy.core.policies.ascendra.lp import least_queued, serving_order
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.targets import Option, evaluate_targets
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.predict import FloatArray, QueryBatch
from ascendra_proxy.core.request import RequestState

__all__ = ["Review", "collect", "hp_candidates", "offload_and_warm"]


@dataclass(slots=True)
class Review:
    """The tick's first batch of questions (one row per request) and their answers.

    Rows ``[0, n_held)`` are held requests, ``[n_held, n_unstarted)`` not-started requests
    on LP backends, the rest streaming requests (resident on their backend)."""

    reqs: list[RequestState] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    where: list[BackendState] = field(default_factory=list)  # backend asked about
    ahead: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    n_held: int = 0
    n_unstarted: int = 0
    ttft: FloatArray = field(default_factory=lambda: np.zeros(0))
    next_k: FloatArray = field(default_factory=lambda: np.zeros(0))

    def ask(self, ctx: Ctx) -> None:
        """One predictor call for every row."""
        n = len(self.reqs)
        if n == 0:
            return
        index = {name: i for i, name in enumerate(ctx.states)}
        reqs = self.reqs
        resident = np.zeros(n, dtype=np.bool_)
        resident[self.n_unstarted :] = True
        batch = QueryBatch(
            backends=tuple(b.features() for b in ctx.states.values()),
            backend_index=np.fromiter((index[b.name] for b in self.where), np.int64, n),
            prompt_tokens=np.fromiter((r.prompt_tokens for r in reqs), np.float64, n),
            generated_tokens=np.fromiter((r.tokens for r in reqs), np.float64, n),
            waited_s=ctx.now - np.fromiter((r.arrival for r in reqs), np.float64, n),
            queued_ahead_tokens=np.asarray(self.ahead, dtype=np.float64),
            cached_tokens=np.asarray(self.cached, dtype=np.float64),
            resident=resident,
            horizon_tokens=ctx.params.migration.horizon_tokens,
            on_backend_s=_on_backend(reqs, self.n_held, ctx.now),
            slo_ttft_s=np.fromiter((r.slo.ttft_s for r in reqs), np.float64, n),
        )
        pred = ctx.predictor.predict(batch)
        self.ttft, self.next_k = pred.ttft_s, pred.next_k_s


def _on_backend(reqs: list[RequestState], n_held: int, now: float) -> FloatArray:
    """Seconds each request has been on the backend asked about (held rows: 0)."""
    sent = [r.dispatched_at for r in reqs[n_held:]]
    on = [0.0 if at is None else now - at for at in sent]
    return np.array([0.0] * n_held + on, dtype=np.float64)


def _engine_order(b: BackendState, ctx: Ctx) -> list[RequestState]:
    if len(b.queue) < 2:
        return b.queue

    def key(r: RequestState) -> tuple[int, float]:
        tr = ctx.tracks.get(r.id)
        prio = tr.priority if tr is not None and tr.priority is not None else 0
        at = r.dispatched_at if r.dispatched_at is not None else r.arrival
        return (prio if b.facts.priority_scheduling else 0, at)

    return sorted(b.queue, key=key)


def collect(
    ctx: Ctx, reqs: Mapping[str, RequestState], streams: list[tuple[RequestState, BackendState]]
) -> Review:
    """Build and answer the tick's review batch (one predictor call)."""
    rv = Review()
    _collect_held(ctx, reqs, rv)
    rv.n_held = len(rv.reqs)
    tracks = ctx.tracks
    for b in ctx.states.values():
        if not (b.is_lp and b.snap.healthy):
            continue
        ahead = 0.0
        for r in _engine_order(b, ctx):
            tr = tracks[r.id]
            if not tr.offloaded:  # an offloaded request stays where it is
                rv.reqs.append(r)
                rv.tracks.append(tr)
                rv.where.append(b)
                rv.ahead.append(ahead)
                rv.cached.append(tr.cached_tokens)
            ahead += max(r.prompt_tokens - tr.cached_tokens, 0)
    rv.n_unstarted = len(rv.reqs)
    rv.reqs.extend(r for r, _ in streams)
    rv.tracks.extend(tracks[r.id] for r, _ in streams)
    rv.where.extend(b for _, b in streams)
    zeros = [0.0] * len(streams)
    rv.ahead.extend(zeros)
    rv.cached.extend(zeros)
    rv.ask(ctx)
    return rv


def _collect_held(ctx: Ctx, reqs: Mapping[str, RequestState], rv: Review) -> None:
    lp_by_model: dict[str, list[BackendState]] = {}
    for b in ctx.states.values():
        if b.is_lp and b.snap.healthy and not b.draining:
            lp_by_model.setdefault(b.snap.model, []).append(b)
    best = {m: least_queued(bs) for m, bs in lp_by_model.items()}
    spread: dict[str, float] = dict.fromkeys(best, 0.0)
    for rid in serving_order(ctx):
        r, tr = reqs.get(rid), ctx.tracks.get(rid)
        if r is None or tr is None or r.model not in best:
            continue
        b = best[r.model]
        rv.reqs.append(r)
        rv.tracks.append(tr)
        rv.where.append(b)
        rv.ahead.append(b.queued_tokens + spread[r.model] / len(lp_by_model[r.model]))
        rv.cached.append(0.0)
        spread[r.model] += r.prompt_tokens


def hp_candidates(ctx: Ctx) -> dict[str, list[BackendState]]:
    """Usable HP backends per model (healthy, not draining)."""
    out: dict[str, list[BackendState]] = {}
    for b in ctx.states.values():
        if b.is_hp and b.snap.healthy and not b.draining:
            out.setdefault(b.snap.model, []).append(b)
    return out


def _at_risk(ctx: Ctx, rv: Review) -> tuple[FloatArray, FloatArray]:
    """(deadline - now - Δ) and the TTFT estimate the offload rule uses, per row."""
    n = rv.n_unstarted
    op = ctx.params.offload
    reqs = rv.reqs
    slo = np.fromiter((r.slo.ttft_s for r in reqs[:n]), np.float64, n)
    arrival = np.fromiter((r.arrival for r in reqs[:n]), np.float64, n)
    margins = np.minimum(op.margin_s, op.margin_max_frac * slo)  # deadline.offload_margin
    if op.rule == "predicted":
        est = rv.ttft[:n]
    else:
        step_now = {}
        for b in ctx.states.values():
            c = ctx.analytical.costs(b.features())
            step_now[b.name] = c.s_mix if c.pending_tokens > 0 else c.s_dec
        est = np.fromiter(
            (max(step_now[rv.where[i].name], rv.tracks[i].est_prefill) for i in range(n)),
            np.float64,
            n,
        )
    return arrival + slo - ctx.now - margins, est


def offload_and_warm(ctx: Ctx, rv: Review) -> None:
    """Apply the offload rule (and warming) to the review's held and not-started rows."""
    n = rv.n_unstarted
    if n == 0:
        return
    room, est = _at_risk(ctx, rv)
    offload = est > room
    hp = hp_candidates(ctx)
    idx = [i for i in np.flatnonzero(offload).tolist() if rv.reqs[i].model in hp]
    warm: list[int] = []
    wp = ctx.params.warming
    if wp.enabled:
        slack = room - est
        warm_mask = (~offload) & (slack < wp.lead_s)
        for i in np.flatnonzero(warm_mask).tolist():
            tr, r = rv.tracks[i], rv.reqs[i]
            if (
                tr.warmed is None
                and tr.prefix
                and r.prompt_tokens >= wp.min_prompt_tokens
                and r.model in hp
            ):
                warm.append(i)
    items = [(rv.reqs[i], rv.tracks[i]) for i in idx + warm]
    options = evaluate_targets(
        ctx,
        items,
        lambda r, t: [b for b in hp[r.model] if b.name not in t.exclude],
        ctx.params.migration.horizon_tokens,
    )
    _offload(ctx, rv, idx, options[: len(idx)])
    _warm(ctx, rv, warm, options[len(idx) :])


def _offload(ctx: Ctx, rv: Review, idx: list[int], options: list[list[Option]]) -> None:
    now = ctx.now
    ranked = []
    for i, opts in zip(idx, options, strict=True):
        if not opts:
            continue
        r, tr = rv.reqs[i], rv.tracks[i]
        feasible = now + min(o.ttft_s for o in opts) <= r.ttft_deadline
        ranked.append((not feasible, tr.order, i, opts))
    ranked.sort(key=lambda x: (x[0], x[1]))
    added: dict[str, float] = {}
    for infeasible, _order, i, opts in ranked:
        if infeasible and not ctx.params.offload.infeasible:
            continue
        r, tr = rv.reqs[i], rv.tracks[i]
        k = (
            0
            if len(opts) == 1
            else pick(
                [o.backend for o in opts],
                [o.ttft_s + added.get(o.backend.name, 0.0) for o in opts],
                [o.hit_tokens for o in opts],
            )
        )
        target = opts[k].backend
        added[target.name] = added.get(target.name, 0.0) + tr.est_prefill
        prio = ctx.priority(target, tr.key, infeasible)
        src = None if i < rv.n_held else rv.where[i]
        ctx.send(r, tr, target, prio, src, opts[k].hit_tokens)
        tr.offloaded = True
        detail = (
            f"from={src.name if src else 'queue'} waited={now - r.arrival:.3f}s "
            f"pred_hp={opts[k].ttft_s:.3f}s{' infeasible' if infeasible else ''}"
        )
        ctx.actions.append(
            Move(r.id, Dispatch(target.name, Reason.OFFLOAD_TTFT, prio, detail), "offload")
        )


def _idle_queue(b: BackendState, max_age_s: float) -> bool:
    """Nothing waits on ``b`` (the proxy's not-started work, the engine's waiting queue).

    A warm-up runs at the lowest priority: sent to an HP with a queue it would sit in that
    queue (blocking HP's ticket) or, run, take prefill time from the offloads it is for."""
    return b.unstarted == 0 and b.queued_tokens == 0 and b.engine_waiting(max_age_s) == 0


def _warm(ctx: Ctx, rv: Review, idx: list[int], options: list[list[Option]]) -> None:
    wp, mp = ctx.params.warming, ctx.params.migration
    done = 0
    for i, opts in zip(idx, options, strict=True):
        if done >= wp.max_per_tick:
            return
        r, tr = rv.reqs[i], rv.tracks[i]
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
        k = pick([o.backend for o in ok], [o.ttft_s for o in ok], [o.hit_tokens for o in ok])
        b = ok[k].backend
        ctx.prefix.record(b.name, tr.prefix)
        b.queued_tokens += r.prompt_tokens
        tr.warmed = b.name
        done += 1
        # behind all real work there: a warm-up only fills the prefix cache ahead of need
        prio = PRIORITY_MAX if b.facts.priority_scheduling else None
        detail = f"slack<{wp.lead_s}s+margin"
        ctx.actions.append(Warm(r.id, b.name, Reason.WARM_SLACK, detail, prio))
