"""The drivers' side of training data: turn a tick's requests and snapshots into rows.

Theory of operation.  The live proxy's ticker and the simulator already hold, at every
monitor tick, the driver's :class:`~ascendra_proxy.core.request.RequestState` values and
the backend snapshots they hand the policy.  :meth:`TrainingTap.on_tick` asks the same
questions of them that the Ascendra policy asks the predictor, with the policy's own
backend view (``BackendState.features()``), for every request the policy would review:

* a **not-started** request on a backend: its prefill behind the prompt tokens queued
  before it in engine order (priority first with priority scheduling, then dispatch
  time), minus the prefix hit the tap expects from what it saw sent there before;
* a **streaming** request: a resident row (its next tokens there);
* a **held** request (in the proxy queue, no backend yet): as if dispatched now to its
  model's non-HP backend with the fewest queued tokens, behind that queue plus its share
  of the held prompt tokens ahead of it in deadline order; any non-HP backend's tokens
  label it (late binding picks one), an HP backend's do not (that is an offload);
* with each row, its dispatch times as the policy passes them to the predictor (the
  request's time on the backend, and from the backend's aggregation the age of the oldest
  not-started request there and the time since its last first token; see :mod:`.features`),
  also written explicitly so that training can mask them.

The rows go to a :class:`~.dataset.TrainingRecorder` (which rate limits them).  The tap is
a :class:`~ascendra_proxy.core.contracts.LifecycleObserver`: every driver (the live proxy,
the simulator) reports to it through that protocol the ticks, dispatches (for the engine
priority; one that replaces an attempt voids the request's pending rows), tokens (with the
backend that produced them), answers that came whole (no token times: rows voided) and
ends.  The tap works under any policy: under the baselines nothing
moves, so every row gets its label.

With a ``predictor`` and ``metrics``, the tap also asks the predictor the tick's new
questions (one batched call over the rows it records, rate limited like them) and, as the
labels come in, feeds predicted vs actual to the error histograms: a live measurement of
the predictor in use, on the same questions the training rows hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot, Role
from ascendra_proxy.core.policies.ascendra.view import (
    BackendState,
    EngineFacts,
    build_states,
    facts_from_info,
)
from ascendra_proxy.core.predict import (
    BackendFeatures,
    PredictionQuery,
    QueryBatch,
    SlackPredictor,
)
from ascendra_proxy.core.prefix import PrefixIndex
from ascendra_proxy.core.request import Outcome as RequestOutcome
from ascendra_proxy.core.request import Phase, RequestState
from ascendra_proxy.predictor.dataset import Outcome, TrainingRecorder
from ascendra_proxy.predictor.metrics import PredictorMetrics

__all__ = ["TrainingTap", "facts_for"]


@dataclass(slots=True)
class _Obs:
    """One question the tick will record."""

    rid: str
    query: PredictionQuery
    features: BackendFeatures
    slo: tuple[float, float]
    extra: dict[str, float]
    accept: list[str] | None = None


class TrainingTap:
    def __init__(
        self,
        recorder: TrainingRecorder,
        facts: Mapping[str, EngineFacts],
        prefix_blocks_per_backend: int = 65536,
        predictor: SlackPredictor | None = None,
        metrics: PredictorMetrics | None = None,
    ) -> None:
        self.recorder = recorder
        self._facts = dict(facts)
        self._prefix = PrefixIndex(prefix_blocks_per_backend)
        self._hits: dict[str, tuple[str, int]] = {}  # request -> (backend, expected hit)
        self._priority: dict[str, int] = {}  # request -> engine priority of its dispatch
        self._predictor = predictor if metrics is not None else None
        self._metrics = metrics
        if metrics is not None:
            recorder.set_on_label(self._outcome)

    # -- driver events ------------------------------------------------------------------

    def on_tick(
        self, now: float, requests: Sequence[RequestState], snapshots: Sequence[BackendSnapshot]
    ) -> None:
        states = build_states(snapshots, self._facts, {}, {})
        held: list[RequestState] = []
        for r in requests:
            if r.phase is Phase.QUEUED:
                held.append(r)
            elif r.phase is not Phase.FINISHED and r.backend in states:
                b = states[r.backend]
                (b.queue if r.phase is Phase.DISPATCHED else b.streams).append(r)
        obs: list[_Obs] = []
        for b in states.values():
            self._fill(b, now)
        for b in states.values():
            if b.snap.healthy:
                self._collect_backend(now, b, obs)
        if held:
            self._collect_held(now, held, states, obs)
        predicted = self._predict(obs)
        rec = self.recorder
        for i, o in enumerate(obs):
            p = None if predicted is None else predicted[i]
            rec.observe(o.rid, now, o.query, o.features, o.slo, o.accept, o.extra, p)

    def on_dispatched(
        self, request_id: str, backend: str, priority: int | None, replaced: bool
    ) -> None:
        """The driver sent the request with this engine priority (None: none sent); a
        request that had an attempt before (retry, offload, migration) loses the rows its
        earlier attempts could no longer label."""
        if replaced:
            self.recorder.discard(request_id)
        if priority is None:
            self._priority.pop(request_id, None)
        else:
            self._priority[request_id] = priority

    def on_tokens(self, request_id: str, now: float, n: int, backend: str) -> None:
        self.recorder.label_tokens(request_id, now, n, backend)

    def on_answer(self, request_id: str, now: float, n: int, backend: str) -> None:
        """The answer came whole: no token times to label its rows with."""
        self.recorder.discard(request_id)

    def on_finished(self, request_id: str, outcome: RequestOutcome) -> None:
        self.recorder.finish(request_id)
        self._hits.pop(request_id, None)
        self._priority.pop(request_id, None)

    # -- rows ---------------------------------------------------------------------------

    def _fill(self, b: BackendState, now: float) -> None:
        """The per-backend sums of the policy's tick aggregation (``tickstate._fill``), with
        the not-started requests in engine order (priority first when the engine runs
        priority scheduling, then dispatch time), as the policy's review orders them."""
        prio = self._priority if b.facts.priority_scheduling else {}
        b.queue.sort(
            key=lambda r: (
                prio.get(r.id, 0),
                r.dispatched_at if r.dispatched_at is not None else r.arrival,
                r.id,
            )
        )
        b.aggregate(now)

    def _cached(self, r: RequestState, b: BackendState) -> int:
        """Expected prefix hit of ``r`` on ``b``, fixed when the tap first sees it there."""
        seen = self._hits.get(r.id)
        if seen is not None and seen[0] == b.name:
            return seen[1]
        hashes = getattr(r, "prefix_hashes", None)
        hit = 0
        if hashes:
            points = self._prefix.checkpoints(tuple(int(h) for h in hashes))
            hit = self._prefix.hit_blocks(b.name, points) * b.facts.block_size
            self._prefix.record(b.name, points)
        hit = min(hit, r.prompt_tokens)
        self._hits[r.id] = (b.name, hit)
        return hit

    def _collect_backend(self, now: float, b: BackendState, obs: list[_Obs]) -> None:
        due = self.recorder.due
        feats = None
        ahead = 0
        head, last = b.oldest_unstarted_s or 0.0, b.last_first_token_s
        for r in b.queue:
            cached = self._cached(r, b)
            if due(r.id, now, False):
                feats = feats or b.features()
                waited = now - r.arrival
                q = PredictionQuery(0, r.prompt_tokens, r.tokens, waited, ahead, cached, False)
                x = _extras(_on_backend(r, now), head, last)
                obs.append(_Obs(r.id, q, feats, (r.slo.ttft_s, r.slo.tbt_s), x))
            ahead += max(r.prompt_tokens - cached, 0)
        for r in b.streams:
            if due(r.id, now, True):
                feats = feats or b.features()
                q = PredictionQuery(0, r.prompt_tokens, r.tokens, now - r.arrival, 0, 0, True)
                x = _extras(_on_backend(r, now), head, last)
                obs.append(_Obs(r.id, q, feats, (r.slo.ttft_s, r.slo.tbt_s), x))

    def _collect_held(
        self,
        now: float,
        held: list[RequestState],
        states: Mapping[str, BackendState],
        obs: list[_Obs],
    ) -> None:
        lp: dict[str, list[BackendState]] = {}
        for b in states.values():
            if b.role is not Role.HP and b.snap.healthy:
                lp.setdefault(b.snap.model, []).append(b)
        spread = dict.fromkeys(lp, 0.0)
        for r in sorted(held, key=lambda r: (r.ttft_deadline, r.arrival, r.id)):
            cands = lp.get(r.model)
            if not cands:
                continue
            b = min(cands, key=lambda c: (c.queued_tokens, c.inflight))
            ahead = b.queued_tokens + spread[r.model] / len(cands)
            spread[r.model] += r.prompt_tokens
            if self.recorder.due(r.id, now, False):
                q = PredictionQuery(0, r.prompt_tokens, 0, now - r.arrival, int(ahead), 0, False)
                x = _extras(0.0, b.oldest_unstarted_s or 0.0, b.last_first_token_s)
                slo = (r.slo.ttft_s, r.slo.tbt_s)
                obs.append(_Obs(r.id, q, b.features(), slo, x, [c.name for c in cands]))

    # -- live error measurement ---------------------------------------------------------

    def _predict(self, obs: list[_Obs]) -> list[tuple[float, float]] | None:
        """The predictor's answers to the tick's questions (one call), if measuring."""
        if self._predictor is None or not obs:
            return None
        index: dict[int, int] = {}
        backends: list[BackendFeatures] = []
        for o in obs:
            if id(o.features) not in index:
                index[id(o.features)] = len(backends)
                backends.append(o.features)
        batch = QueryBatch(
            backends=tuple(backends),
            backend_index=np.fromiter((index[id(o.features)] for o in obs), np.int64, len(obs)),
            prompt_tokens=np.fromiter((o.query.prompt_tokens for o in obs), np.float64),
            generated_tokens=np.fromiter((o.query.generated_tokens for o in obs), np.float64),
            waited_s=np.fromiter((o.query.waited_s for o in obs), np.float64),
            queued_ahead_tokens=np.fromiter((o.query.queued_ahead_tokens for o in obs), float),
            cached_tokens=np.fromiter((o.query.cached_tokens for o in obs), np.float64),
            resident=np.fromiter((o.query.resident for o in obs), np.bool_),
            horizon_tokens=self.recorder.horizon,
        )
        pred = self._predictor.predict(batch)
        return list(zip(pred.ttft_s.tolist(), pred.next_k_s.tolist(), strict=True))

    def _outcome(self, o: Outcome) -> None:
        m = self._metrics
        if m is None or o.slo is None:
            return
        if not o.resident:
            m.observe("ttft", o.predicted[0], o.ttft, o.slo[0])
        if o.next_k is not None:
            m.observe("next_k", o.predicted[1], o.next_k, o.slo[1] * o.horizon)


def _on_backend(r: RequestState, now: float) -> float:
    return now - r.dispatched_at if r.dispatched_at is not None else 0.0


def _extras(on_backend: float, head: float, last: float | None) -> dict[str, float]:
    x = {"on_backend_s": on_backend, "head_age_s": head}
    if last is not None:
        x["last_first_token_s"] = last
    return x


def facts_for(infos: Sequence[BackendInfo]) -> dict[str, EngineFacts]:
    """Engine facts per backend name from BackendInfo values (as the policy reads them)."""
    return {info.name: facts_from_info(info) for info in infos}
