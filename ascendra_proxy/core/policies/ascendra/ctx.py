"""Everything one decision (a route or a tick) works on, and the bookkeeping of a dispatch.

Theory of operation.  :class:`Ctx` bundles the policy's long-lived state (tracks, held
queue, prefix index, priority clock, predictors) with the per-decision backend states and
the ids of the requests already acted on.  Rules return their actions; :meth:`Ctx.send`
is the one place that accounts for sending a request somewhere (:meth:`Ctx.note_warm` for
a warm-up of its prompt): the expected prefix hit is read *before* recording the prompt on the
target, the target's load grows (so later decisions in the same tick see it), the source's
load shrinks, and the track remembers the priority and cache hit of its current dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ascendra_proxy.core.deadline import PriorityClock
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
        if source is not None:
            source.remove(req.prompt_tokens, tr.cached_tokens, started=req.tokens > 0)
        hit = self.hit_tokens(target, tr) if hit_tokens is None else hit_tokens
        tr.cached_tokens = hit
        tr.priority = priority
        self.prefix.record(target.name, tr.prefix)
        target.add(req.prompt_tokens + req.tokens, hit)
        self.held.remove(req.id)
        self.acted.add(req.id)

    def prefill_token_s(self, b: BackendState) -> float:
        """Seconds per prefill token on ``b`` now: a full mixed step over its chunk."""
        if b.prefill_token_s is None:
            self._step_costs(b)
        assert b.prefill_token_s is not None
        return b.prefill_token_s

    def mixed_step_s(self, b: BackendState) -> float:
        """A full mixed step on ``b`` now: its current decodes plus a chunk of prefill."""
        if b.mixed_step_s is None:
            self._step_costs(b)
        assert b.mixed_step_s is not None
        return b.mixed_step_s

    def _step_costs(self, b: BackendState) -> None:
        """Cached per decision: a backend's decodes do not change within one."""
        c = self.analytical.costs(b.features())
        b.mixed_step_s, b.prefill_token_s = c.s_mix, c.s_mix / c.cap

    def note_warm(self, target: BackendState, tr: Track, prompt_tokens: int) -> None:
        """Account for a warm-up of ``tr``'s prompt on ``target`` (a separate generation:
        the request itself stays where it is)."""
        tr.warmed = target.name
        self.prefix.record(target.name, tr.prefix)
        target.queued_tokens += prompt_tokens
        target.queued_work += max(prompt_tokens - self.hit_tokens(target, tr), 0)
