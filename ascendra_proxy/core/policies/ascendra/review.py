"""The monitor tick's questions about LP-side requests: typed rows, one predictor call.

Theory of operation.  :func:`collect` builds three groups of :class:`Row` (one row per
request, each naming the backend it is asked about):

* ``held`` - every **held** request in EDF order, as if dispatched now to the LP backend
  where its first token comes soonest (:func:`~.lp.closest_lp`, expected prefix hit
  included), behind that backend's queued prefill work plus its share of the held work
  ahead of it (spread over the model's usable LP backends);
* ``unstarted`` - every **not-started** request on a healthy LP backend, behind the
  work queued before it in that engine's order (priority then dispatch time with
  priority scheduling, dispatch time otherwise), with its expected cache hit;
* ``streams`` - every **streaming** request on a healthy LP backend that could still be
  migrated (resident rows: its next tokens there), for :mod:`.migrate`.

:meth:`Review.ask` sends all rows to the predictor in one batch and gives each group its
own answer arrays (``ttft_s``, ``next_k_s``, aligned with ``rows``): no row ranges, no
index arithmetic.  :mod:`.order` then orders the held group (and corrects its predicted
times for the order), :mod:`.offload` applies the offload and admission rules to the first
two groups, and :mod:`.migrate` the TBT rule to the third.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.lp import closest_lp
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.predict import FloatArray, QueryBatch
from ascendra_proxy.core.request import RequestState

__all__ = ["Review", "Row", "RowGroup", "collect", "lp_by_model"]


@dataclass(frozen=True, slots=True)
class Row:
    """One question: ``req`` on ``backend``, behind ``ahead_tokens`` of prefill work, with
    ``cached_tokens`` expected in that engine's prefix cache."""

    req: RequestState
    track: Track
    backend: BackendState
    ahead_tokens: float
    cached_tokens: float


def _empty() -> FloatArray:
    return np.zeros(0, dtype=np.float64)


@dataclass(slots=True)
class RowGroup:
    """Rows of one kind and, once asked, the predictor's answers aligned with them."""

    resident: bool  # the request already runs on the backend asked about
    rows: list[Row] = field(default_factory=list)
    ttft_s: FloatArray = field(default_factory=_empty)  # until its next token there
    next_k_s: FloatArray = field(default_factory=_empty)  # for the horizon's tokens after

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(slots=True)
class Review:
    held: RowGroup = field(default_factory=lambda: RowGroup(resident=False))
    unstarted: RowGroup = field(default_factory=lambda: RowGroup(resident=False))
    streams: RowGroup = field(default_factory=lambda: RowGroup(resident=True))
    # held ids in the order LP serves them (set by .order; EDF until then)
    held_order: list[str] = field(default_factory=list)

    def groups(self) -> tuple[RowGroup, RowGroup, RowGroup]:
        return (self.held, self.unstarted, self.streams)

    def ask(self, ctx: Ctx) -> None:
        """One predictor call for every row of every group."""
        rows = [row for g in self.groups() for row in g.rows]
        n = len(rows)
        if n == 0:
            return
        index = {name: i for i, name in enumerate(ctx.states)}
        reqs = [row.req for row in rows]
        resident = np.concatenate(
            [np.full(len(g), g.resident, dtype=np.bool_) for g in self.groups()]
        )
        batch = QueryBatch(
            backends=tuple(b.features() for b in ctx.states.values()),
            backend_index=np.fromiter((index[row.backend.name] for row in rows), np.int64, n),
            prompt_tokens=np.fromiter((r.prompt_tokens for r in reqs), np.float64, n),
            generated_tokens=np.fromiter((r.tokens for r in reqs), np.float64, n),
            waited_s=ctx.now - np.fromiter((r.arrival for r in reqs), np.float64, n),
            queued_ahead_tokens=np.fromiter((row.ahead_tokens for row in rows), np.float64, n),
            cached_tokens=np.fromiter((row.cached_tokens for row in rows), np.float64, n),
            resident=resident,
            horizon_tokens=ctx.params.migration.horizon_tokens,
            on_backend_s=np.fromiter((_on_backend(row, ctx.now) for row in rows), np.float64, n),
            slo_ttft_s=np.fromiter((r.slo.ttft_s for r in reqs), np.float64, n),
        )
        pred = ctx.predictor.predict(batch)
        start = 0
        for g in self.groups():
            end = start + len(g)
            g.ttft_s, g.next_k_s = pred.ttft_s[start:end].copy(), pred.next_k_s[start:end]
            start = end


def _on_backend(row: Row, now: float) -> float:
    """Seconds the request has been on the backend asked about (0 for a hypothetical one)."""
    at = row.req.dispatched_at
    return 0.0 if at is None or row.req.backend != row.backend.name else now - at


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
    """Build and answer the tick's review (one predictor call)."""
    rv = Review()
    _collect_held(ctx, reqs, rv)
    for b in ctx.states.values():
        if not (b.is_lp and b.snap.healthy):
            continue
        ahead = 0.0
        for r in _engine_order(b, ctx):
            tr = ctx.tracks[r.id]
            if not tr.offloaded:  # an offloaded request stays where it is
                rv.unstarted.rows.append(Row(r, tr, b, ahead, tr.cached_tokens))
            ahead += max(r.prompt_tokens - tr.cached_tokens, 0)
    rv.streams.rows.extend(Row(r, ctx.tracks[r.id], b, 0.0, 0.0) for r, b in streams)
    rv.ask(ctx)
    return rv


def lp_by_model(ctx: Ctx) -> dict[str, list[BackendState]]:
    """Usable LP backends per model (healthy, not draining)."""
    out: dict[str, list[BackendState]] = {}
    for b in ctx.states.values():
        if b.is_lp and b.snap.healthy and not b.draining:
            out.setdefault(b.snap.model, []).append(b)
    return out


def _collect_held(ctx: Ctx, reqs: Mapping[str, RequestState], rv: Review) -> None:
    lp = lp_by_model(ctx)
    spread: dict[str, float] = dict.fromkeys(lp, 0.0)
    for rid in ctx.held:
        r, tr = reqs.get(rid), ctx.tracks.get(rid)
        if r is None or tr is None:
            continue
        rv.held_order.append(rid)
        cands = lp.get(r.model)
        if not cands:
            continue
        b, hit = closest_lp(ctx, cands, r, tr)
        ahead = b.queued_work + spread[r.model] / len(cands)
        rv.held.rows.append(Row(r, tr, b, ahead, float(hit)))
        spread[r.model] += max(r.prompt_tokens - hit, 0)
