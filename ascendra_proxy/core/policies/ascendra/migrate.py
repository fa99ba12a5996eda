"""Mid-stream migration [ours]: move a stream when it pays, or when its backend is down.

Theory of operation.  Mean TBT is judged over the whole stream, so what matters is where
the mean ends up.  For a streaming LP request with ``n`` tokens, first token at ``t1``,
and a horizon of ``h = min(remaining max_tokens, migration.horizon_tokens)`` more tokens,
the predictor gives the time those take if it **stays** (resident: its next token, then
``h - 1`` more) and if it **moves** to a target (``overhead_s`` for the abort and new
connection, a re-prefill of prompt + generated tokens minus the target's expected prefix
hit behind the target's queue, then ``h - 1`` more)::

    mean(x) = (now + t_x - t1) / (n - 1 + h)

A stream is *heading over* its SLO when ``mean(stay) > tbt_slo``.  It moves iff some
target has ``mean(move) <= tbt_slo`` (moving rescues it; a stream lost either way stays
where it costs HP nothing) and ``t_stay - t_move >= min_benefit_s`` (the benefit exceeds
the re-prefill cost by a margin).  The most endangered streams go first, at most
``max_per_tick`` per tick and ``max_per_request`` per request; HP targets must accept a
migration (:func:`~.hp.accepts_migration`), re-checked after each move.

A stream on an **unhealthy** backend moves regardless, to the healthy target (HP that
accepts, or any usable LP) with the least predicted time for the horizon.  A request on an
unhealthy backend that has not started is moved like a fresh request would be routed.
Moved streams get an engine priority of ``now`` (ahead of every queued deadline).
"""

from __future__ import annotations

import numpy as np

from ascendra_proxy.core.decisions import Action, Dispatch, Move
from ascendra_proxy.core.policies.ascendra.actions import Reason
from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.hp import accepts_migration
from ascendra_proxy.core.policies.ascendra.review import RowGroup
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.targets import Option, evaluate_targets
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.request import RequestState

__all__ = ["continuation_targets", "migrate_streams", "move_time", "rescue_down_streams"]


def _accepting(ctx: Ctx, b: BackendState) -> bool:
    mp = ctx.params.migration
    return accepts_migration(b, mp.hp_running_frac, ctx.params.ticket.kv_free, ctx.max_age)


def continuation_targets(
    ctx: Ctx, req: RequestState, tr: Track, hp_only: bool
) -> list[BackendState]:
    """Where a continuation of ``req`` may go: accepting HP backends (and usable LP ones)."""
    out = []
    for b in ctx.states.values():
        if not b.usable(req.model, tr.exclude) or b.name == req.backend:
            continue
        if (b.is_hp and _accepting(ctx, b)) or (b.is_lp and not hp_only):
            out.append(b)
    return out


def move_time(o: Option, horizon: int, h: int, overhead_s: float) -> float:
    """Seconds until ``h`` tokens arrived if the stream moves to ``o``."""
    return overhead_s + o.ttft_s + o.next_k_s * (h - 1) / horizon


def migrate_streams(ctx: Ctx, streams: RowGroup) -> list[Action]:
    """The TBT rule over the review's streaming rows."""
    mp = ctx.params.migration
    m = len(streams)
    if not mp.enabled or mp.max_per_tick == 0 or m == 0:
        return []
    horizon = mp.horizon_tokens
    reqs = [row.req for row in streams.rows]
    tokens = np.fromiter((r.tokens for r in reqs), np.float64, m)
    first = np.fromiter((r.first_token_at or ctx.now for r in reqs), np.float64, m)
    # remaining_tokens, vectorized (the property costs a Python call per row and tick)
    budget = np.fromiter((r.max_tokens for r in reqs), np.float64, m)
    h = np.minimum(np.maximum(budget - tokens, 0.0), horizon)
    slo = np.fromiter((r.slo.tbt_s for r in reqs), np.float64, m)
    t_stay = streams.ttft_s + streams.next_k_s * (h - 1) / horizon
    proj = (ctx.now + t_stay - first) / np.maximum(tokens - 1 + h, 1)
    over = np.flatnonzero(proj > slo)
    if over.size == 0:
        return []
    worst = over[np.argsort(-(proj[over] - slo[over]) / slo[over], kind="stable")]
    chosen = [int(i) for i in worst[: 2 * mp.max_per_tick]]
    rows = [streams.rows[i] for i in chosen]
    options = evaluate_targets(
        ctx,
        [(row.req, row.track) for row in rows],
        lambda r, t: continuation_targets(ctx, r, t, True),
        horizon,
    )
    actions: list[Action] = []
    for i, row, opts in zip(chosen, rows, options, strict=True):
        if len(actions) >= mp.max_per_tick:
            break
        steps = int(h[i])
        ok = [o for o in opts if _accepting(ctx, o.backend)]
        if not ok:
            continue
        best = min(ok, key=lambda o: move_time(o, horizon, steps, mp.overhead_s))
        t_move = move_time(best, horizon, steps, mp.overhead_s)
        proj_move = (ctx.now + t_move - first[i]) / max(tokens[i] - 1 + steps, 1)
        if proj_move > slo[i] or t_stay[i] - t_move < mp.min_benefit_s:
            continue
        detail = (
            f"from={row.req.backend} mean_stay={proj[i]:.3f}s mean_move={proj_move:.3f}s "
            f"gain={t_stay[i] - t_move:.3f}s"
        )
        actions.append(
            _move(ctx, row.req, row.track, best.backend, row.backend, Reason.MIGRATE_TBT, detail)
        )
    return actions


def _move(
    ctx: Ctx,
    r: RequestState,
    tr: Track,
    target: BackendState,
    source: BackendState | None,
    reason: str,
    detail: str,
) -> Move:
    prio = ctx.priority(target, ctx.now)
    ctx.send(r, tr, target, prio, source)
    tr.migrations += 1
    return Move(r.id, Dispatch(target.name, reason, prio, detail), "migrate")


def rescue_down_streams(ctx: Ctx, streams: list[tuple[RequestState, BackendState]]) -> list[Action]:
    """Move every stream whose backend is unhealthy to the best healthy target."""
    if not streams:
        return []
    horizon = ctx.params.migration.horizon_tokens
    items = [(r, ctx.tracks[r.id]) for r, _ in streams]
    options = evaluate_targets(
        ctx, items, lambda r, t: continuation_targets(ctx, r, t, False), horizon
    )
    actions: list[Action] = []
    for (r, src), opts in zip(streams, options, strict=True):
        ok = [o for o in opts if o.backend.is_lp or _accepting(ctx, o.backend)]
        if not ok:
            continue
        steps = max(min(r.remaining_tokens, horizon), 1)
        best = min(ok, key=lambda o: move_time(o, horizon, steps, 0.0))
        move = _move(
            ctx,
            r,
            ctx.tracks[r.id],
            best.backend,
            src,
            Reason.MIGRATE_BACKEND_DOWN,
            f"from={src.name} unhealthy",
        )
        actions.append(move)
    return actions
