"""Batched questions to the predictor: where a request is now, and where it could go.

Theory of operation.  A tick asks the predictor twice: once about where requests are now
(:mod:`.review`), once about where some of them could go.  :func:`evaluate_targets` asks,
for each request in a list, about every candidate target backend at once (a hypothetical
dispatch: the request's prompt plus its generated tokens must be prefilled there behind the
target's queue, minus the prefix hit the policy expects from what it sent there before),
and returns the answers grouped per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.predict import QueryBatch
from ascendra_proxy.core.request import RequestState

__all__ = ["Option", "evaluate_targets"]


@dataclass(frozen=True, slots=True)
class Option:
    """One candidate target for one request, with the predictor's answer."""

    backend: BackendState
    ttft_s: float  # until the next token there (prefill included)
    next_k_s: float  # for the horizon's tokens after that
    hit_tokens: int


def evaluate_targets(
    ctx: Ctx,
    items: Sequence[tuple[RequestState, Track]],
    candidates: Callable[[RequestState, Track], list[BackendState]],
    horizon: int,
) -> list[list[Option]]:
    """For each item, every candidate target with its predicted times (one predictor call)."""
    if not items:
        return []
    index = {name: i for i, name in enumerate(ctx.states)}
    reqs: list[RequestState] = []
    where: list[BackendState] = []
    hits: list[int] = []
    counts: list[int] = []
    for req, tr in items:
        cands = candidates(req, tr)
        counts.append(len(cands))
        for b in cands:
            reqs.append(req)
            where.append(b)
            hits.append(min(ctx.hit_tokens(b, tr), req.prompt_tokens))
    n = len(reqs)
    if n == 0:
        return [[] for _ in items]
    batch = QueryBatch(
        backends=tuple(b.features() for b in ctx.states.values()),
        backend_index=np.fromiter((index[b.name] for b in where), np.int64, n),
        prompt_tokens=np.fromiter((r.prompt_tokens for r in reqs), np.float64, n),
        generated_tokens=np.fromiter((r.tokens for r in reqs), np.float64, n),
        waited_s=ctx.now - np.fromiter((r.arrival for r in reqs), np.float64, n),
        queued_ahead_tokens=np.fromiter((b.queued_work for b in where), np.float64, n),
        cached_tokens=np.asarray(hits, dtype=np.float64),
        resident=np.zeros(n, dtype=np.bool_),
        horizon_tokens=horizon,
        on_backend_s=np.zeros(n, dtype=np.float64),  # hypothetical targets: not sent yet
        slo_ttft_s=np.fromiter((r.slo.ttft_s for r in reqs), np.float64, n),
    )
    pred = ctx.predictor.predict(batch)
    ttft, next_k = pred.ttft_s.tolist(), pred.next_k_s.tolist()
    out: list[list[Option]] = []
    i = 0
    for c in counts:
        out.append([Option(where[j], ttft[j], next_k[j], hits[j]) for j in range(i, i + c)])
        i += c
    return out
