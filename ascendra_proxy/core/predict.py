"""The slack predictor seam and the analytical fallback model.

Theory of operation.  Once per tick the policy asks one batched question: for each
(request, backend) pair, *how long until the request's next token on that backend, and how
long after that for the next k tokens?*  The pair is either where the request is now (queued
or decoding there) or a hypothetical target (an HP backend for an offload, any backend for a
migrated continuation).  The question is a :class:`QueryBatch`: per-backend features once
(:class:`BackendFeatures`: the proxy's exact counts plus scraped gauges with their age) and
per-request columns (numpy arrays) that point into them.  The answer is a
:class:`Prediction` of two arrays plus the ``source`` that produced it.  Anything that
implements :class:`SlackPredictor` plugs in: :class:`AnalyticalPredictor` here, the learned
LightGBM model from ``ascendra_proxy.predictor`` later.

The analytical model follows the spirit of the paper's batch-time regression, with the
engine's own step-time model (``LatencyProfile.step_time(P, D, C, A)``, seconds) instead of
a fitted one.  Per backend it estimates ``D`` decoding sequences (the proxy's streams, or the
scraped running count when that is larger and fresh) with their context ``C``, a prefill
capacity of ``cap = max_num_batched_tokens - D`` tokens per step (vLLM v1: decodes first,
prefill chunks fill the rest of the token budget), a decode-only step ``s_dec`` and a full
mixed step ``s_mix``.  For a request that still needs a prefill of ``u`` tokens (prompt,
plus generated tokens for a continuation, minus the expected prefix-cache hit) behind
``ahead`` queued tokens::

    ttft   = s_now / 2                               # the step already running
           + n_full * s_mix + [rem > 0] * (s_dec + rem * slope)
           + attn * (u * (u / 2 + cached) + ahead * mean_queued_prompt / 2)
    with   Q = ahead + u,  n_full = Q // cap,  rem = Q % cap,  slope = (s_mix - s_dec) / cap

and the next ``k`` tokens take ``k`` steps, mixed while prefill work queued behind it
remains, decode-only after.  A request already decoding on the backend has ``ttft = s_now/2``.

Sequence slots: an engine runs at most ``max_num_seqs`` sequences.  When the decoding
sequences plus the requests queued ahead (``ahead / mean_queued_prompt``, rounded) fill
every slot, the request also waits for the ``k``-th slot to free, ``k`` = the overflow,
which takes the ``k``-th smallest token budget left among the backend's streams
(``stream_remaining``) in decode steps; its own prefill follows::

    ttft = max(ttft, s_now / 2 + remaining_k * s_dec + own_prefill)

Budgets are ``max_tokens`` minus tokens generated, an upper bound (a stream that ends at
EOS frees its slot sooner); sequences the proxy does not know about (scraped ``running``
above its own count) free theirs no sooner than the longest known one, or at once when
none is known.
Engine waiting requests the proxy does not know about (scraped ``waiting`` above the
proxy's count, when fresh) are assumed to be as long as the request's own prompt.  Without
a profile for the backend every step costs the backend's observed recent step time (or
``fallback_step_s``).  Not modelled: KV exhaustion and preemption, arrivals after now; the
learned model is there to capture those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "AnalyticalPredictor",
    "BackendFeatures",
    "FloatArray",
    "Prediction",
    "PredictionQuery",
    "QueryBatch",
    "SlackPredictor",
    "StepTimeModel",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
PredictorSource = Literal["analytical", "learned"]

_ATTN_PROBE = 1.0e6  # attention work used to read the per-unit attention cost off a profile
_UNKNOWN_CONTEXT = 1024  # context assumed per decode the proxy does not know about


class StepTimeModel(Protocol):
    """What a latency profile offers (``ascendra_proxy.engine.profile.LatencyProfile``)."""

    def step_time(
        self, prefill_tokens: int, decode_seqs: int, decode_context: int, prefill_attn_work: float
    ) -> float: ...

    def prefill_time(self, prompt_tokens: int, chunk: int, cached_tokens: int = 0) -> float: ...


@dataclass(frozen=True, slots=True)
class BackendFeatures:
    """One backend at question time: proxy-exact counts first, scraped gauges with age."""

    name: str
    role: str  # "lp" | "hp" | "mixed" (effective role)
    profile: str  # latency profile name ("" when unknown)
    inflight: int  # proxy-dispatched, unfinished
    unstarted: int  # of which without a first token yet
    unstarted_tokens: int  # their prompt tokens still to prefill
    decode_seqs: int  # of which streaming
    decode_context_tokens: int  # prompt + generated tokens of the streaming ones
    running: int | None
    waiting: int | None
    kv_usage: float | None
    scrape_age_s: float | None  # None: never scraped
    recent_step_s: float | None  # recent inter-token gap of its streams
    max_num_seqs: int
    max_num_batched_tokens: int
    # tokens each proxy-known stream may still generate (max_tokens left), ascending
    stream_remaining: tuple[int, ...] = ()
    # dispatch times (learned model inputs; the analytical model ignores them), seconds:
    oldest_unstarted_s: float | None = None  # since the oldest not-started one was sent (0: none)
    last_first_token_s: float | None = None  # since the last first token of its streams


@dataclass(frozen=True, slots=True)
class PredictionQuery:
    """One (request, backend) question, in row form (tests, training rows)."""

    backend: int  # index into the batch's backends
    prompt_tokens: int
    generated_tokens: int
    waited_s: float
    queued_ahead_tokens: int  # prompt tokens queued before it on that backend
    cached_tokens: int  # expected prefix-cache hit
    resident: bool  # already decoding there (no prefill before its next token)


@dataclass(frozen=True, slots=True)
class QueryBatch:
    """Many questions at once: per-request columns indexing into ``backends``."""

    backends: tuple[BackendFeatures, ...]
    backend_index: IntArray
    prompt_tokens: FloatArray
    generated_tokens: FloatArray
    waited_s: FloatArray
    queued_ahead_tokens: FloatArray
    cached_tokens: FloatArray
    resident: BoolArray
    horizon_tokens: int
    # per row, learned model inputs (None: unknown): seconds since the request was sent to
    # the backend asked about (0 for a hypothetical target), and its TTFT SLO
    on_backend_s: FloatArray | None = None
    slo_ttft_s: FloatArray | None = None

    def __len__(self) -> int:
        return int(self.backend_index.shape[0])

    @classmethod
    def from_rows(
        cls,
        backends: Sequence[BackendFeatures],
        rows: Sequence[PredictionQuery],
        horizon_tokens: int,
    ) -> QueryBatch:
        def col(values: list[float]) -> FloatArray:
            return np.asarray(values, dtype=np.float64)

        return cls(
            backends=tuple(backends),
            backend_index=np.asarray([r.backend for r in rows], dtype=np.int64),
            prompt_tokens=col([r.prompt_tokens for r in rows]),
            generated_tokens=col([r.generated_tokens for r in rows]),
            waited_s=col([r.waited_s for r in rows]),
            queued_ahead_tokens=col([r.queued_ahead_tokens for r in rows]),
            cached_tokens=col([r.cached_tokens for r in rows]),
            resident=np.asarray([r.resident for r in rows], dtype=np.bool_),
            horizon_tokens=horizon_tokens,
        )

    def row(self, i: int) -> PredictionQuery:
        return PredictionQuery(
            backend=int(self.backend_index[i]),
            prompt_tokens=int(self.prompt_tokens[i]),
            generated_tokens=int(self.generated_tokens[i]),
            waited_s=float(self.waited_s[i]),
            queued_ahead_tokens=int(self.queued_ahead_tokens[i]),
            cached_tokens=int(self.cached_tokens[i]),
            resident=bool(self.resident[i]),
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """``ttft_s``: seconds from now to the request's next token on that backend (its first
    token unless it is already decoding there); ``next_k_s``: seconds from that token until
    ``horizon_tokens`` more have arrived."""

    ttft_s: FloatArray
    next_k_s: FloatArray
    source: PredictorSource


class SlackPredictor(Protocol):
    @property
    def source(self) -> PredictorSource: ...

    def predict(self, batch: QueryBatch) -> Prediction: ...


@dataclass(frozen=True, slots=True)
class _Costs:
    """Per-backend step costs (seconds) the analytical model derives once per question."""

    cap: float  # prefill tokens per step
    s_dec: float  # decode-only step
    s_mix: float  # step with a full prefill chunk (attention excluded)
    attn: float  # seconds per unit of prefill attention work
    extra_waiting: float  # engine-waiting requests unknown to the proxy
    pending_tokens: float  # prefill tokens queued on the backend (proxy-known)
    mean_queued_prompt: float  # mean prompt of those, 0 when none
    decoding: int  # sequences holding a slot (proxy streams, or fresh scraped running)


class AnalyticalPredictor:
    """Step-time arithmetic over latency profiles; see the module docstring."""

    def __init__(
        self,
        models: Mapping[str, StepTimeModel],
        fallback_step_s: float = 0.03,
        max_scrape_age_s: float = 2.0,
    ) -> None:
        self._models = dict(models)
        self._fallback_step_s = fallback_step_s
        self._max_age = max_scrape_age_s

    @property
    def source(self) -> PredictorSource:
        return "analytical"

    def model(self, profile: str) -> StepTimeModel | None:
        return self._models.get(profile)

    def isolated_prefill_s(self, profile: str, prompt_tokens: int, chunk: int) -> float:
        """The paper's ``est_prefill``: the prompt alone on an idle engine, chunk by chunk."""
        tokens = max(prompt_tokens, 1)
        chunk = max(chunk, 1)
        m = self._models.get(profile)
        if m is None:
            return math.ceil(tokens / chunk) * self._fallback_step_s
        return m.prefill_time(tokens, chunk)

    def costs(self, f: BackendFeatures) -> _Costs:
        fresh = f.scrape_age_s is not None and f.scrape_age_s <= self._max_age
        d = f.decode_seqs
        extra_waiting = 0.0
        if fresh and f.running is not None:
            d = max(d, f.running - f.unstarted)
        if fresh and f.waiting is not None:
            extra_waiting = float(max(0, f.waiting - f.unstarted))
        ctx_per = f.decode_context_tokens / f.decode_seqs if f.decode_seqs else _UNKNOWN_CONTEXT
        c = int(f.decode_context_tokens + (d - f.decode_seqs) * ctx_per)
        cap = max(f.max_num_batched_tokens - d, 1)
        mean_prompt = f.unstarted_tokens / f.unstarted if f.unstarted else 0.0
        m = self._models.get(f.profile)
        queued = (extra_waiting, f.unstarted_tokens, mean_prompt, d)
        if m is None:
            step = f.recent_step_s if f.recent_step_s else self._fallback_step_s
            return _Costs(cap, step, step, 0.0, *queued)
        s_dec = m.step_time(0, d, c, 0.0)
        s_mix = m.step_time(cap, d, c, 0.0)
        attn = (m.step_time(cap, d, c, _ATTN_PROBE) - s_mix) / _ATTN_PROBE
        return _Costs(cap, s_dec, s_mix, attn, *queued)

    def predict(self, batch: QueryBatch) -> Prediction:
        n = len(batch)
        if n == 0:
            empty = np.zeros(0, dtype=np.float64)
            return Prediction(empty, empty.copy(), "analytical")
        table = [self.costs(f) for f in batch.backends]
        # one (backends x columns) table gathered per row at once: numpy calls cost more
        # than the arithmetic at a tick's ~100 rows, so per-backend values are computed once
        per_backend = np.array(
            [
                [
                    t.cap,
                    t.s_dec,
                    t.s_mix,
                    (t.s_mix - t.s_dec) / t.cap,
                    t.attn,
                    t.extra_waiting,
                    t.pending_tokens,
                    t.mean_queued_prompt,
                ]
                for t in table
            ],
            dtype=np.float64,
        )
        cap, s_dec, s_mix, slope, attn, extra_waiting, pending, mean_q = per_backend[
            batch.backend_index
        ].T
        steps = (cap, s_dec, s_mix, slope)
        s_now = np.where(pending > 0, s_mix, s_dec)
        prompt = batch.prompt_tokens
        u = np.maximum(prompt + batch.generated_tokens - batch.cached_tokens, 1.0)
        ahead = batch.queued_ahead_tokens + extra_waiting * prompt
        mean_q = np.where(mean_q > 0, mean_q, u)
        own_attn = attn * u * (u / 2 + batch.cached_tokens)
        prefill = _chunked_time(ahead + u, *steps)
        prefill += own_attn + attn * ahead * mean_q / 2
        resident = batch.resident
        slot_wait = _slot_wait(batch, table, np.rint(ahead / mean_q))
        own = slot_wait + _chunked_time(u, *steps) + own_attn
        ttft = np.where(resident, 0.5 * s_now, 0.5 * s_now + np.maximum(prefill, own))
        behind = np.where(resident, pending, np.maximum(pending - ahead - u, 0.0))
        k = float(max(batch.horizon_tokens, 0))
        mixed_steps = np.minimum(np.ceil(behind / cap), k)
        mixed_time = np.minimum(_chunked_time(behind, *steps), k * s_mix)
        next_k = mixed_time + (k - mixed_steps) * s_dec
        return Prediction(ttft, next_k, "analytical")


def _slot_wait(batch: QueryBatch, table: Sequence[_Costs], ahead_n: FloatArray) -> FloatArray:
    """Seconds until a sequence slot frees for each row (0 when one is free at once)."""
    out = np.zeros(len(batch), dtype=np.float64)
    for j, f in enumerate(batch.backends):
        if not f.stream_remaining:  # the usual case: its slots cannot all be taken
            continue
        t = table[j]
        rows = np.flatnonzero(batch.backend_index == j)
        if rows.size == 0:
            continue
        k = t.decoding + ahead_n[rows] + 1 - f.max_num_seqs  # slots that must free first
        if not (k > 0).any():
            continue
        left = np.asarray(f.stream_remaining, dtype=np.float64)
        pos = np.clip(k, 1, left.size).astype(np.int64) - 1
        out[rows] = np.where(k > 0, left[pos] * t.s_dec, 0.0)
    return out


def _chunked_time(
    tokens: FloatArray, cap: FloatArray, s_dec: FloatArray, s_mix: FloatArray, slope: FloatArray
) -> FloatArray:
    """Seconds to push ``tokens`` prefill tokens through steps of ``cap`` tokens
    (``slope = (s_mix - s_dec) / cap``: seconds per prefill token of a partial step)."""
    full = np.floor(tokens / cap)
    rem = tokens - full * cap
    partial: FloatArray = np.where(rem > 0, s_dec + rem * slope, 0.0)
    return full * s_mix + partial
