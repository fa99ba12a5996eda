"""Batched questions to the predictor: where a request is now, and where it could go.

Theory of operation.  A tick asks the predictor twice.  :class:`Rows` collects one
(request, backend) question per row (its backend index, prompt, generated tokens, time
waited, queued tokens ahead of it, expected cache hit, and whether it is already decoding
there) and turns them into one :class:`~ascendra_proxy.core.predict.QueryBatch`.
:func:`evaluate_targets` asks, for each request in a list, about every candidate target
backend at once (a hypothetical dispatch: the request's prompt plus its generated tokens
must be prefilled there behind the target's queue, minus the prefix hit the policy expects
from what it sent there before), and returns the answers grouped per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.predict import BackendFeatures, FloatArray, Prediction, QueryBatch
from ascendra_proxy.core.request import RequestState

__all__ = ["Option", "Rows", "evaluate_targets", "features_of"]


def features_of(ctx: Ctx) -> tuple[tuple[BackendFeatures, ...], dict[str, int]]:
    """Per-backend features in state order and the name -> index map."""
    feats = tuple(b.features() for b in ctx.states.values())
    return feats, {f.name: i for i, f in enumerate(feats)}


@dataclass(slots=True)
class Rows:
    bidx: list[int] = field(default_factory=list)
    prompt: list[float] = field(default_factory=list)
    gen: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)
    ahead: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    resident: list[bool] = field(default_factory=list)

    def add(
        self, b: int, req: RequestState, now: float, ahead: float, cached: float, resident: bool
    ) -> None:
        self.bidx.append(b)
        self.prompt.append(req.prompt_tokens)
        self.gen.append(req.tokens)
        self.waited.append(now - req.arrival)
        self.ahead.append(ahead)
        self.cached.append(cached)
        self.resident.append(resident)

    def __len__(self) -> int:
        return len(self.bidx)

    def batch(self, feats: tuple[BackendFeatures, ...], horizon: int) -> QueryBatch:
        def f(xs: list[float]) -> FloatArray:
            return np.asarray(xs, dtype=np.float64)

        return QueryBatch(
            backends=feats,
            backend_index=np.asarray(self.bidx, dtype=np.int64),
            prompt_tokens=f(self.prompt),
            generated_tokens=f(self.gen),
            waited_s=f(self.waited),
            queued_ahead_tokens=f(self.ahead),
            cached_tokens=f(self.cached),
            resident=np.asarray(self.resident, dtype=np.bool_),
            horizon_tokens=horizon,
        )


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
    feats, index = features_of(ctx)
    rows = Rows()
    per_item: list[list[tuple[BackendState, int]]] = []
    for req, tr in items:
        cands = []
        for b in candidates(req, tr):
            hit = min(ctx.hit_tokens(b, tr), req.prompt_tokens)
            rows.add(index[b.name], req, ctx.now, b.queued_tokens, hit, False)
            cands.append((b, hit))
        per_item.append(cands)
    pred = _predict(ctx, rows, feats, horizon)
    out: list[list[Option]] = []
    i = 0
    for cands in per_item:
        opts = []
        for b, hit in cands:
            opts.append(Option(b, float(pred.ttft_s[i]), float(pred.next_k_s[i]), hit))
            i += 1
        out.append(opts)
    return out


def _predict(ctx: Ctx, rows: Rows, feats: tuple[BackendFeatures, ...], horizon: int) -> Prediction:
    if len(rows) == 0:
        empty = np.zeros(0, dtype=np.float64)
        return Prediction(empty, empty.copy(), ctx.predictor.source)
    return ctx.predictor.predict(rows.batch(feats, horizon))
