"""What policies know about backends: static facts and point-in-time load snapshots.

Theory of operation.  A :class:`BackendInfo` is fixed for the life of a policy (built from
the config: name, pool, role, engine, model, limits).  A :class:`BackendSnapshot` is what
the driver's single load view (``proxy/load.py`` live, the simulator in virtual time) hands
to a policy at each decision.  Its signals differ in freshness, and the types say so:

* ``inflight`` and ``queued_prompt_tokens`` are the proxy's own exact counts of requests it
  has dispatched to this backend and not yet seen finish: always fresh.
* ``scraped`` is the engine's ``/metrics`` view (running, waiting, KV usage), which lags by
  up to a scrape interval; it carries ``age_s`` (seconds since it was scraped, at the time
  the snapshot was built) and is ``None`` when never scraped.  Policies decide how old is
  too old (:meth:`ScrapedLoad.fresh`); they never look at a clock to do so.

Roles are proxy-side labels: ``LP`` (throughput pool), ``HP`` (reserved, urgency pool),
``MIXED`` (no Ascendra role; baselines treat every role alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "BackendInfo",
    "BackendSnapshot",
    "InflightCounts",
    "Role",
    "ScrapedLoad",
    "snapshot_of",
]


class Role(Enum):
    LP = "lp"
    HP = "hp"
    MIXED = "mixed"


@dataclass(frozen=True, slots=True)
class ScrapedLoad:
    """Engine-reported load; any gauge the engine does not export is None."""

    running: int | None
    waiting: int | None
    kv_usage: float | None  # 0..1
    age_s: float

    def fresh(self, max_age_s: float) -> bool:
        return self.age_s <= max_age_s


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """Static facts about one backend, from the config."""

    name: str
    pool: str
    role: Role
    engine: str  # "vllm" | "sglang"
    model: str
    max_num_seqs: int | None = None
    priority_scheduling: bool = False  # engine started with a priority waiting queue
    # Engine facts the analytical predictor needs (from the backend's engine_settings).
    profile: str | None = None  # latency profile name, e.g. "a100-llama3-8b"
    max_num_batched_tokens: int | None = None
    block_size: int | None = None


@dataclass(frozen=True, slots=True)
class BackendSnapshot:
    """One backend's state at decision time."""

    name: str
    pool: str
    role: Role
    engine: str
    model: str
    healthy: bool
    inflight: int  # proxy's exact count of dispatched, unfinished requests
    queued_prompt_tokens: int  # prompt tokens of in-flight requests without a first token yet
    scraped: ScrapedLoad | None
    max_num_seqs: int | None = None
    inflight_limit: int | None = None  # proxy-side cap (limits.max_inflight_per_backend)

    def serves(self, model: str) -> bool:
        return self.model == model

    @property
    def has_room(self) -> bool:
        """False when the proxy-side in-flight cap is reached."""
        return self.inflight_limit is None or self.inflight < self.inflight_limit

    def fresh_scraped(self, max_age_s: float) -> ScrapedLoad | None:
        """The scraped load if it is at most ``max_age_s`` old, else None."""
        if self.scraped is None or not self.scraped.fresh(max_age_s):
            return None
        return self.scraped


class InflightCounts:
    """The proxy's exact counts for one backend, kept by a driver (the live proxy's
    ``BackendRuntime``, the simulator's ``SimBackend``): every dispatch, first token and end
    passes through it, so these are never stale."""

    def __init__(self) -> None:
        self.inflight = 0
        self.queued_prompt_tokens = 0  # of in-flight requests without a first token yet

    def begin(self, prompt_tokens: int) -> None:
        self.inflight += 1
        self.queued_prompt_tokens += prompt_tokens

    def first_token(self, prompt_tokens: int) -> None:
        self.queued_prompt_tokens = max(0, self.queued_prompt_tokens - prompt_tokens)

    def end(self, prompt_tokens_still_queued: int) -> None:
        self.inflight = max(0, self.inflight - 1)
        if prompt_tokens_still_queued:
            self.first_token(prompt_tokens_still_queued)


def snapshot_of(
    info: BackendInfo,
    counts: InflightCounts,
    *,
    healthy: bool,
    scraped: ScrapedLoad | None,
    inflight_limit: int | None,
) -> BackendSnapshot:
    """What a policy sees of one backend: its static facts, the proxy's exact counts and
    the scraped gauges with their age."""
    return BackendSnapshot(
        name=info.name,
        pool=info.pool,
        role=info.role,
        engine=info.engine,
        model=info.model,
        healthy=healthy,
        inflight=counts.inflight,
        queued_prompt_tokens=counts.queued_prompt_tokens,
        scraped=scraped,
        max_num_seqs=info.max_num_seqs,
        inflight_limit=inflight_limit,
    )
