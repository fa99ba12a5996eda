"""Everything one decision (a route or a tick) works on, and the bookkeeping of a dispatch.

Theory of operation.  :class:`Ctx` bundles the policy's long-lived state (tracks, held
queue, prefix index, priority clock, predictors) with the per-decision backend states and
the actions emitted so far.  :meth:`Ctx.send` is the one place that accounts for sending a
request somewhere: the expected prefix hit is read *before* recording the prompt on the
target, the target's load grows (so later decisions in the same tick see it), the source's
load shrinks, and the track remembers the priority and cache hit of its current dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ascendra_proxy.core.deadline import PriorityClock
from ascendra_proxy.core.policies.ascendra.actions import AscendraAction
from ascendra_proxy.core.policies.ascendra.params import AscendraParams
from ascendra_proxy.core.policies.ascendra.state import HeldQueue, Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.predict import AnalyticalPredictor, SlackPredictor
from ascendra_proxy.core.prefix import PrefixIndex
from ascendra_proxy.core.request import RequestState

__all__ = ["Ctx"]


@dataclass(slots=True)
class Ctx:
    now: float
    params: AscendraParams
    clock: PriorityClock
    states: dict[str, BackendState]
    tracks: dict[str, Track]
    held: HeldQueue
    prefix: PrefixIndex
    predictor: SlackPredictor
    analytical: AnalyticalPredictor
    actions: list[AscendraAction] = field(default_factory=list)
    acted: set[str] = field(default_factory=set)  # requests dispatched/moved this decision

    @property
    def max_age(self) -> float:
        return self.params.max_scrape_age_s

    def priority(self, b: BackendState, at: float, infeasible: bool = False) -> int | None:
        """Engine priority for time ``at`` on ``b`` (None: ``b`` runs FCFS, send none)."""
        if not b.facts.priority_scheduling:
            return None
        return self.clock.priority(at, infeasible)

    def hit_tokens(self, b: BackendState, tr: Track) -> int:
        if not tr.prefix:
            return 0
        return self.prefix.hit_blocks(b.name, tr.prefix) * b.facts.block_size

    def send(
        self,
        req: RequestState,
        tr: Track,
        target: BackendState,
        priority: int | None,
        source: BackendState | None = None,
        hit_tokens: int | None = None,
    ) -> None:
        """Account for ``req`` going to ``target`` (from ``source``, if it was on one);
        ``hit_tokens`` is the expected prefix hit there when the caller already knows it."""
        started = req.tokens > 0
        tr.cached_tokens = self.hit_tokens(target, tr) if hit_tokens is None else hit_tokens
        tr.priority = priority
        self.prefix.record(target.name, tr.prefix)
        work = req.prompt_tokens + req.tokens
        target.add(work, started=False)
        if source is not None:
            source.inflight = max(0, source.inflight - 1)
            if not started:
                source.unstarted = max(0, source.unstarted - 1)
                source.queued_tokens = max(0, source.queued_tokens - req.prompt_tokens)
        self.held.remove(req.id)
        self.acted.add(req.id)
