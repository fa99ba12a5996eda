"""The order LP serves the held queue in: EDF, with the requests to sacrifice last.

Theory of operation.  The held queue is sorted by latest start (EDF, across SLO classes:
a 30 s class simply sorts behind a 1 s one that arrived at the same time).  When not all
held requests can get their first token in time, plain EDF lets one late request make the
ones behind it late too.  :func:`serving_order` therefore moves some requests behind the
others ("sacrificed"; they are still served, or shed per their class, see
:mod:`ascendra_proxy.core.admission`):

1. requests whose latest start has already passed (the paper's "infeasible");
2. with ``lp_moore_hodgson`` on, the rest by Moore-Hodgson's rule, which maximises the
   number of on-time jobs on one machine: walk EDF, and whenever a request's predicted
   first token falls after its deadline, sacrifice the longest request kept so far (the
   one whose removal frees the most time for the others).

The "machine" is the model's LP pool: a held request's predicted time is the review's
(behind everything held ahead of it in EDF, spread over the pool), and its length is its
prefill work on that pool (the isolated prefill of its uncached tokens over the number of
LP backends).  Removing a request advances every kept one behind it by that length, so the
review's predicted times are corrected in place: kept rows by the work sacrificed ahead
of them, sacrificed rows to after all kept work.  The offload and admission rules then
judge each held request at the position it will really be served from.

With ``lp_infeasible_last`` off the order is the paper's plain EDF, and nothing moves.
"""

from __future__ import annotations

import heapq

import numpy as np

from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.review import Review, RowGroup, lp_by_model

__all__ = ["serving_order"]


def serving_order(ctx: Ctx, rv: Review) -> list[str]:
    """Held ids in serving order; corrects ``rv.held.ttft_s`` to that order."""
    held = rv.held
    if len(held) == 0:
        return rv.held_order
    work = _work_s(ctx, held)
    ttft = held.ttft_s
    if not ctx.params.lp_infeasible_last:  # the paper's plain EDF: nothing is sacrificed
        return rv.held_order
    late = np.fromiter((row.track.key < ctx.now for row in held.rows), np.bool_, len(held))
    if ctx.params.lp_moore_hodgson:
        _moore_hodgson(ctx.now, held, work, late)
    if not late.any():
        return rv.held_order
    _correct(ttft, work, late)
    kept = [row.req.id for row, x in zip(held.rows, late.tolist(), strict=True) if not x]
    last = [row.req.id for row, x in zip(held.rows, late.tolist(), strict=True) if x]
    placed = set(kept) | set(last)
    others = [rid for rid in rv.held_order if rid not in placed]  # no LP for their model
    return kept + others + last


def _work_s(ctx: Ctx, held: RowGroup) -> list[float]:
    """Each held request's prefill time on its model's LP pool."""
    pool = {m: len(bs) for m, bs in lp_by_model(ctx).items()}
    out = []
    for row in held.rows:
        prompt = max(row.req.prompt_tokens, 1)
        uncached = max(prompt - row.cached_tokens, 1.0) / prompt
        out.append(row.track.est_prefill * uncached / max(pool.get(row.req.model, 1), 1))
    return out


def _moore_hodgson(now: float, held: RowGroup, work: list[float], late: np.ndarray) -> None:
    """Mark in ``late`` the requests Moore-Hodgson sacrifices (EDF rows, in order)."""
    kept: list[tuple[float, int]] = []  # max-heap by work: (-work, row)
    freed = 0.0  # work sacrificed so far, all of it ahead of the current row
    ttft = held.ttft_s.tolist()
    for i, row in enumerate(held.rows):
        if late[i]:
            freed += work[i]
            continue
        heapq.heappush(kept, (-work[i], i))
        if now + ttft[i] - freed > row.req.ttft_deadline:
            neg, j = heapq.heappop(kept)
            late[j] = True
            freed += -neg


def _correct(ttft: np.ndarray, work: list[float], late: np.ndarray) -> None:
    """Predicted times at the serving position: kept rows lose the sacrificed work ahead of
    them, sacrificed rows come after all the work kept (in EDF order among themselves)."""
    w = np.asarray(work, dtype=np.float64)
    sacrificed = np.where(late, w, 0.0)
    ahead = np.cumsum(sacrificed) - sacrificed
    end_of_kept = float(ttft[-1] - sacrificed.sum())  # the last row's time covers all work
    ttft[~late] -= ahead[~late]
    ttft[late] = end_of_kept + np.cumsum(sacrificed)[late]
