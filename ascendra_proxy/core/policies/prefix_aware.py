"""``prefix_aware``: weighted scores of expected prefix-cache hit, queue depth and KV usage.

The baseline a user of an inference gateway would pick, in the style of llm-d's default
scheduler (filter, score, pick the highest weighted sum; mixed pools, no roles).  Among the
eligible backends (see :mod:`.eligibility`) each gets three scores in ``[0, 1]``:

* ``prefix``: the share of the prompt's full blocks the proxy already sent to that backend,
  ``hit_blocks / prompt_blocks`` from a :class:`~ascendra_proxy.core.prefix.PrefixIndex`
  (an *expected* hit: the engine may have evicted it).  0 when the driver gave no block
  hashes (prompt text it did not tokenize).
* ``queue``: fewer requests in flight is better, min-max normalised over the candidates,
  ``(max - q) / (max - min)`` (every candidate scores 1 when they are equal).  ``q`` is the
  proxy's exact in-flight count, not the scraped waiting queue: a scrape is up to an
  interval old, and at tens of requests per second a stale queue sends a burst to one
  backend.
* ``kv``: ``1 - kv_usage`` from a fresh scrape; an unknown or stale gauge scores 0.

The backend with the largest ``prefix_weight * prefix + queue_weight * queue + kv_weight
* kv`` wins; ties go to fewer in-flight requests, then to the name (deterministic, where
llm-d picks at random).  The chosen backend then records the prompt's prefix checkpoints,
and a backend seen unhealthy forgets what it was sent (a restarted engine has an empty
cache).  The default weights are llm-d's (3 : 2 : 2).  No engine priority is sent and
nothing happens at ticks.

YAML::

    policy: {type: prefix_aware, prefix_weight: 3.0, queue_weight: 2.0, kv_weight: 2.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot
from ascendra_proxy.core.decisions import Decision, Dispatch
from ascendra_proxy.core.policies.base import RouteOnly
from ascendra_proxy.core.policies.eligibility import eligible
from ascendra_proxy.core.prefix import PrefixIndex
from ascendra_proxy.core.request import RequestState

__all__ = ["PrefixAware", "PrefixAwareParams", "Scores", "make_prefix_aware", "score_backends"]


@dataclass(frozen=True, slots=True)
class PrefixAwareParams:
    prefix_weight: float = field(default=3.0, metadata={"ge": 0})
    queue_weight: float = field(default=2.0, metadata={"ge": 0})
    kv_weight: float = field(default=2.0, metadata={"ge": 0})
    # Scraped KV usage older than this (seconds) is unknown (scores 0).
    max_scrape_age_s: float = field(default=5.0, metadata={"gt": 0})
    # Prompt blocks remembered per backend (about the engine's KV capacity in blocks).
    prefix_blocks_per_backend: int = field(default=65536, metadata={"ge": 1})

    def validate(self) -> None:
        if self.prefix_weight + self.queue_weight + self.kv_weight <= 0:
            raise ValueError("at least one weight must be positive")


@dataclass(frozen=True, slots=True)
class Scores:
    name: str
    prefix: float
    queue: float
    kv: float
    total: float
    inflight: int


def score_backends(
    p: PrefixAwareParams,
    candidates: Sequence[BackendSnapshot],
    hit_share: Sequence[float],
) -> list[Scores]:
    """The three scores and their weighted sum per candidate (``hit_share`` in order)."""
    loads = [b.inflight for b in candidates]
    lo, hi = min(loads), max(loads)
    out = []
    for b, prefix in zip(candidates, hit_share, strict=True):
        queue = 1.0 if hi == lo else (hi - b.inflight) / (hi - lo)
        s = b.fresh_scraped(p.max_scrape_age_s)
        kv = 0.0 if s is None or s.kv_usage is None else 1.0 - min(1.0, max(0.0, s.kv_usage))
        total = p.prefix_weight * prefix + p.queue_weight * queue + p.kv_weight * kv
        out.append(Scores(b.name, prefix, queue, kv, total, b.inflight))
    return out


class PrefixAware(RouteOnly):
    name = "prefix_aware"

    def __init__(self, params: PrefixAwareParams) -> None:
        self._p = params
        self._index = PrefixIndex(params.prefix_blocks_per_backend)

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        for b in backends:
            if not b.healthy:
                self._index.forget(b.name)
        allowed = eligible(req.model, backends, exclude)
        if not isinstance(allowed, list):
            return allowed
        points = self._index.checkpoints(req.prefix_hashes)
        blocks = len(req.prefix_hashes)
        hits = [self._index.hit_blocks(b.name, points) for b in allowed]
        shares = [h / blocks if blocks else 0.0 for h in hits]
        scores = score_backends(self._p, allowed, shares)
        best = min(scores, key=lambda s: (-s.total, s.inflight, s.name))
        self._index.record(best.name, points)
        detail = f"prefix {best.prefix:.2f} queue {best.queue:.2f} kv {best.kv:.2f}"
        return Dispatch(best.name, "prefix_aware", detail=detail)


def make_prefix_aware(
    params: PrefixAwareParams, backends: Sequence[BackendInfo], profiles: Mapping[str, object]
) -> PrefixAware:
    return PrefixAware(params)
