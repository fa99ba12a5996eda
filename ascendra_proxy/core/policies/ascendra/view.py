"""The policy's working view of each backend during one decision (a route or a tick).

Theory of operation.  A :class:`BackendState` joins three things: the driver's snapshot
(health, the proxy's exact in-flight counts, scraped gauges with age), the static
:class:`EngineFacts` from the config (profile, token budget, sequence limit, whether the
engine runs priority scheduling), and the policy's own role for the backend (which may
differ from the configured one under adaptive roles, and may be *draining*).  During a
tick it also aggregates the requests on the backend (not-started ones in engine order,
streaming count and context, observed token gaps) and it is updated as the tick emits
actions, so that later decisions in the same tick see the load earlier ones added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot, Role
from ascendra_proxy.core.predict import BackendFeatures
from ascendra_proxy.core.request import RequestState

__all__ = ["DEFAULT_BUDGET", "DEFAULT_MAX_SEQS", "BackendState", "EngineFacts", "facts_from_info"]

DEFAULT_MAX_SEQS = 256  # vLLM's default max_num_seqs
DEFAULT_BUDGET = 2048  # vLLM's default max_num_batched_tokens (A100)


@dataclass(frozen=True, slots=True)
class EngineFacts:
    """What the policy needs to know about the engine behind a backend (from the config)."""

    profile: str = ""
    max_num_seqs: int = DEFAULT_MAX_SEQS
    max_num_batched_tokens: int = DEFAULT_BUDGET
    priority_scheduling: bool = False
    block_size: int = 16


def facts_from_info(info: BackendInfo) -> EngineFacts:
    """Engine facts from a BackendInfo; unknown fields fall back to vLLM's A100 defaults."""
    return EngineFacts(
        profile=info.profile or "",
        max_num_seqs=info.max_num_seqs or DEFAULT_MAX_SEQS,
        max_num_batched_tokens=info.max_num_batched_tokens or DEFAULT_BUDGET,
        priority_scheduling=info.priority_scheduling,
        block_size=info.block_size or 16,
    )


@dataclass(slots=True)
class BackendState:
    name: str
    snap: BackendSnapshot
    facts: EngineFacts
    role: Role
    draining: bool
    inflight: int = 0
    queued_tokens: int = 0  # prompt tokens dispatched and not started
    # of those, the ones still to prefill (expected prefix-cache hits left out): what LP
    # room and placement count, since a cached block costs the engine no prefill step
    queued_work: int = 0
    unstarted: int = 0
    streaming: int = 0
    decode_context: int = 0
    gap_sum: float = 0.0
    gaps: int = 0
    stream_remaining: tuple[int, ...] = ()  # token budget left per stream, ascending
    prefill_token_s: float | None = None  # a mixed step's time per prefill token (cache)
    mixed_step_s: float | None = None  # a step with its decodes and a full chunk (cache)
    oldest_unstarted_s: float | None = None  # dispatch times at the last aggregate(now)
    last_first_token_s: float | None = None
    # not-started requests on it (the review sorts them into engine order), streaming ones
    queue: list[RequestState] = field(default_factory=list)
    streams: list[RequestState] = field(default_factory=list)

    @classmethod
    def of(
        cls, snap: BackendSnapshot, facts: EngineFacts, role: Role, draining: bool
    ) -> BackendState:
        unstarted = 1 if snap.queued_prompt_tokens > 0 else 0  # refined by a tick's aggregation
        return cls(
            snap.name,
            snap,
            facts,
            role,
            draining,
            snap.inflight,
            snap.queued_prompt_tokens,
            snap.queued_prompt_tokens,
            unstarted,
        )

    @property
    def is_lp(self) -> bool:
        return self.role is not Role.HP

    @property
    def is_hp(self) -> bool:
        return self.role is Role.HP

    @property
    def max_num_seqs(self) -> int:
        return self.snap.max_num_seqs or self.facts.max_num_seqs

    def usable(self, model: str, exclude: frozenset[str] = frozenset()) -> bool:
        """Healthy, serves ``model``, not draining, not excluded, under the proxy's cap."""
        s = self.snap
        return (
            s.healthy
            and s.model == model
            and not self.draining
            and s.name not in exclude
            and (s.inflight_limit is None or self.inflight < s.inflight_limit)
        )

    def running(self, max_age_s: float) -> int:
        """Sequences on the engine: the proxy's in-flight count or the fresh scrape, larger."""
        scraped = self.snap.fresh_scraped(max_age_s)
        if scraped is None or scraped.running is None:
            return self.inflight
        return max(self.inflight, scraped.running)

    def kv_free(self, max_age_s: float) -> float | None:
        scraped = self.snap.fresh_scraped(max_age_s)
        if scraped is None or scraped.kv_usage is None:
            return None
        return 1.0 - scraped.kv_usage

    def engine_waiting(self, max_age_s: float) -> int:
        scraped = self.snap.fresh_scraped(max_age_s)
        return 0 if scraped is None or scraped.waiting is None else scraped.waiting

    def aggregate(self, now: float) -> None:
        """The per-backend sums from ``queue`` and ``streams`` (a tick's aggregation)."""
        q, s = self.queue, self.streams
        self.unstarted = len(q)
        self.queued_tokens = sum([r.prompt_tokens for r in q])
        sent = [r.dispatched_at for r in q if r.dispatched_at is not None]
        self.oldest_unstarted_s = now - min(sent) if sent else 0.0
        self.streaming = len(s)
        context = gaps = 0
        gap_sum = 0.0
        last_first: float | None = None
        for r in s:
            context += r.prompt_tokens + r.tokens
            gaps += r.gaps
            gap_sum += r.gap_sum
            t = r.first_token_at
            if t is not None and (last_first is None or t > last_first):
                last_first = t
        self.decode_context, self.gaps, self.gap_sum = context, gaps, gap_sum
        self.last_first_token_s = None if last_first is None else now - last_first
        # the budgets matter only when the slots may all be taken (the predictor's slot wait)
        scraped = self.snap.scraped
        running = scraped.running if scraped is not None and scraped.running else 0
        if max(len(s), running) + len(q) >= self.max_num_seqs:
            self.stream_remaining = tuple(sorted([r.remaining_tokens for r in s]))
        else:
            self.stream_remaining = ()

    def add(self, prompt_tokens: int, cached_tokens: int) -> None:
        """Account for a request this decision sends here (not started there yet)."""
        self.inflight += 1
        self.unstarted += 1
        self.queued_tokens += prompt_tokens
        self.queued_work += max(prompt_tokens - cached_tokens, 0)

    def remove(self, prompt_tokens: int, cached_tokens: int, started: bool) -> None:
        """Account for a request this decision takes away from here."""
        self.inflight = max(0, self.inflight - 1)
        if not started:
            self.unstarted = max(0, self.unstarted - 1)
            self.queued_tokens = max(0, self.queued_tokens - prompt_tokens)
            self.queued_work = max(0, self.queued_work - max(prompt_tokens - cached_tokens, 0))

    def features(self) -> BackendFeatures:
        s = self.snap.scraped
        return BackendFeatures(
            name=self.name,
            role=self.role.value,
            profile=self.facts.profile,
            inflight=self.inflight,
            unstarted=self.unstarted,
            unstarted_tokens=self.queued_tokens,
            decode_seqs=self.streaming,
            decode_context_tokens=self.decode_context,
            running=None if s is None else s.running,
            waiting=None if s is None else s.waiting,
            kv_usage=None if s is None else s.kv_usage,
            scrape_age_s=None if s is None else s.age_s,
            recent_step_s=self.gap_sum / self.gaps if self.gaps else None,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.facts.max_num_batched_tokens,
            stream_remaining=self.stream_remaining,
            oldest_unstarted_s=self.oldest_unstarted_s,
            last_first_token_s=self.last_first_token_s,
        )


def build_states(
    snapshots: Sequence[BackendSnapshot],
    facts: Mapping[str, EngineFacts],
    roles: Mapping[str, Role],
    draining: Mapping[str, Role],
) -> dict[str, BackendState]:
    """One state per snapshot, in snapshot order (which is the deterministic tie-break)."""
    out: dict[str, BackendState] = {}
    for snap in snapshots:
        role = roles.get(snap.name, snap.role)
        out[snap.name] = BackendState.of(
            snap, facts.get(snap.name, EngineFacts()), role, snap.name in draining
        )
    return out
