"""The ``ascendra`` policy object: route, tick and on_finish over the rule modules.

Theory of operation.  ``route`` places one request (fresh, retried, or a stream whose
backend failed); ``tick`` reviews every in-flight request in this order:

1. aggregate the driver's requests per backend and reconcile the policy's own state with
   them (held queue = exactly the driver's QUEUED requests; tracks = live requests);
2. adaptive roles: finish drains, maybe start one (:mod:`.roles`);
3. rescue requests on unhealthy backends (:mod:`.migrate`);
4. one predictor call over held, not-started and migratable streaming requests
   (:mod:`.review`), the held queue's serving order (:mod:`.order`), then offloads,
   warm-ups and refusals (:mod:`.offload`) and TBT migrations (:mod:`.migrate`);
5. held requests whose TBT SLO only an HP backend's steps meet go there (:mod:`.tbt`);
   late binding of the rest of the held queue, in serving order, to LP room, then HP
   tickets for its head (:mod:`.lp`).

Every rule returns its actions and ``tick`` concatenates them.  Each request gets at most
one dispatching action per tick (Assign, Move or Drop), and none once it acted in an
earlier step of the same tick (``Ctx.acted``).  Nothing reads a clock: ``now`` comes in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot, Role
from ascendra_proxy.core.deadline import PriorityClock, latest_start
from ascendra_proxy.core.decisions import Decision, Dispatch, Hold, Move
from ascendra_proxy.core.policies.ascendra.actions import AscendraAction, Reason
from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.hp import ticket_refusal
from ascendra_proxy.core.policies.ascendra.lp import (
    assign_held,
    closest_lp,
    has_room,
    least_queued,
    tickets_for_held,
)
from ascendra_proxy.core.policies.ascendra.migrate import (
    continuation_targets,
    migrate_streams,
    move_time,
    rescue_down_streams,
)
from ascendra_proxy.core.policies.ascendra.offload import offload_warm_shed
from ascendra_proxy.core.policies.ascendra.order import serving_order
from ascendra_proxy.core.policies.ascendra.params import AscendraParams
from ascendra_proxy.core.policies.ascendra.review import collect
from ascendra_proxy.core.policies.ascendra.roles import RoleController
from ascendra_proxy.core.policies.ascendra.state import HeldQueue, Track
from ascendra_proxy.core.policies.ascendra.targets import evaluate_targets
from ascendra_proxy.core.policies.ascendra.tbt import assign_tight, place_tight, tight_hp
from ascendra_proxy.core.policies.ascendra.tickstate import TickInputs, aggregate
from ascendra_proxy.core.policies.ascendra.view import (
    BackendState,
    EngineFacts,
    build_states,
    facts_from_info,
)
from ascendra_proxy.core.policies.eligibility import eligible
from ascendra_proxy.core.predict import AnalyticalPredictor, SlackPredictor, StepTimeModel
from ascendra_proxy.core.prefix import PrefixIndex
from ascendra_proxy.core.request import RequestState

__all__ = ["AscendraPolicy", "make_ascendra"]


class AscendraPolicy:
    name = "ascendra"

    def __init__(
        self,
        params: AscendraParams,
        backends: Sequence[BackendInfo],
        step_models: Mapping[str, StepTimeModel] | None = None,
        facts: Mapping[str, EngineFacts] | None = None,
        predictor: SlackPredictor | None = None,
    ) -> None:
        self._p = params
        self._facts = {b.name: facts_from_info(b) for b in backends}
        self._facts.update(facts or {})
        self._roles: dict[str, Role] = {b.name: b.role for b in backends}
        self._model_facts: dict[str, EngineFacts] = {}
        for b in sorted(backends, key=lambda b: b.role is Role.HP):  # LP facts first
            self._model_facts.setdefault(b.model, self._facts[b.name])
        self._analytical = AnalyticalPredictor(
            step_models or {}, params.fallback_step_s, params.max_scrape_age_s
        )
        self._predictor: SlackPredictor = predictor or self._analytical
        self._tracks: dict[str, Track] = {}
        self._held = HeldQueue()
        self._prefix = PrefixIndex(params.prefix_blocks_per_backend)
        self._clock: PriorityClock | None = None
        # per backend, the expected prefix-cache hits among its not-started requests (exact
        # after each tick, kept up to date by the decisions between ticks): a route sees a
        # backend's prefill work, not only its queued prompt tokens
        self._cached_queued: dict[str, int] = {}
        self._seq = 0
        self._stream_cursor = 0
        self._role_ctl = (
            RoleController(params.adaptive, params.ticket, params.max_scrape_age_s)
            if params.roles == "adaptive"
            else None
        )

    # -- protocol -----------------------------------------------------------------------

    @property
    def tick_interval_s(self) -> float | None:
        return self._p.tick_s

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        if req.id in self._held:  # the driver re-asks about a held request: still held
            return Hold(Reason.HELD, f"{len(self._held)} held")
        ctx = self._ctx(now, backends)
        tr = self._track(req)
        tr.exclude = tr.exclude | exclude
        cands = [b for b in ctx.states.values() if b.usable(req.model, tr.exclude)]
        if not cands:
            why = eligible(req.model, backends, tr.exclude)
            if isinstance(why, Hold):
                self._held.push(tr)
                return Hold(Reason.HELD, why.detail)
            if not isinstance(why, list):
                return why
            cands = [ctx.states[b.name] for b in why]  # only draining backends are left
        if req.tokens > 0:
            return self._continue_elsewhere(ctx, req, tr, cands)
        choice = fresh_target(ctx, req, tr, cands, force=False)
        if choice is None:
            self._held.push(tr)
            return Hold(Reason.HELD, f"{len(self._held)} held")
        b, reason = choice
        prio = ctx.priority(b, tr.key)
        ctx.send(req, tr, b, prio)
        self._remember_cached(ctx)
        return Dispatch(b.name, reason, prio)

    def on_finish(self, req: RequestState, now: float) -> None:
        self._tracks.pop(req.id, None)
        self._held.remove(req.id)

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[AscendraAction]:
        ctx = self._ctx(now, backends)
        inp = aggregate(ctx, requests, self._track, self._p.migration)
        actions: list[AscendraAction] = []
        if self._role_ctl is not None:
            actions += self._role_ctl.review(now, ctx.states, self._roles, inp.held_by_model)
        actions += rescue_down_streams(ctx, inp.streams_down)
        actions += self._rescue_not_started(ctx, inp)
        rv = collect(ctx, inp.reqs, self._rotate(ctx, inp.streams_lp))
        order = serving_order(ctx, rv)
        actions += offload_warm_shed(ctx, rv)
        actions += migrate_streams(ctx, rv.streams)
        actions += assign_tight(ctx, inp.reqs, order)
        actions += assign_held(ctx, inp.reqs, order)
        actions += tickets_for_held(ctx, inp.reqs, order)
        if self._role_ctl is not None:
            for a in actions:
                if isinstance(a, Move) and a.kind == "offload":
                    self._role_ctl.note_offload(now, inp.reqs[a.request_id].model)
        self._remember_cached(ctx)
        return actions

    # -- extras for drivers -------------------------------------------------------------

    @property
    def predictor_source(self) -> str:
        return self._predictor.source

    def use_predictor(self, predictor: SlackPredictor | None) -> None:
        """Swap the predictor (None: back to the analytical model)."""
        self._predictor = predictor or self._analytical

    def roles(self) -> dict[str, Role]:
        """The effective role of every backend the policy has seen."""
        return dict(self._roles)

    def status(self) -> dict[str, object]:
        draining = {} if self._role_ctl is None else self._role_ctl.draining
        return {
            "held": len(self._held),
            "tracked": len(self._tracks),
            "roles": {k: v.value for k, v in self._roles.items()},
            "draining": {k: v.value for k, v in draining.items()},
            "predictor": self._predictor.source,
        }

    def held_ids(self) -> list[str]:
        """Held request ids in EDF order."""
        return list(self._held)

    # -- internals ----------------------------------------------------------------------

    def _ctx(self, now: float, backends: Sequence[BackendSnapshot]) -> Ctx:
        horizon = 3600.0
        if self._clock is None:
            self._clock = PriorityClock(float(int(now)), self._p.priority_resolution_ms / 1000.0)
        elif self._clock.needs_rebase(now, horizon):
            self._clock = self._clock.rebased(now)
        draining = {} if self._role_ctl is None else self._role_ctl.draining
        states = build_states(backends, self._facts, self._roles, draining)
        for name, b in states.items():
            b.queued_work = max(b.queued_tokens - self._cached_queued.get(name, 0), 0)
        return Ctx(
            now,
            self._p,
            self._clock,
            states,
            self._tracks,
            self._held,
            self._prefix,
            self._predictor,
            self._analytical,
        )

    def _remember_cached(self, ctx: Ctx) -> None:
        self._cached_queued = {n: b.queued_tokens - b.queued_work for n, b in ctx.states.items()}

    def _rotate(
        self, ctx: Ctx, streams: list[RequestState]
    ) -> list[tuple[RequestState, BackendState]]:
        """The next ``review_per_tick`` LP streams (continuing where the last tick stopped)
        that may still migrate: under the per-request cap, with enough tokens left."""
        mp = self._p.migration
        k, n = mp.review_per_tick, len(streams)
        if n > k:
            start = self._stream_cursor % n
            self._stream_cursor = start + k
            streams = (streams[start:] + streams[:start])[:k]
        tracks, states = ctx.tracks, ctx.states
        return [
            (r, states[r.backend])
            for r in streams
            if r.backend is not None
            and r.max_tokens - r.tokens >= mp.min_remaining_tokens
            and tracks[r.id].migrations < mp.max_per_request
        ]

    def _track(self, req: RequestState) -> Track:
        tr = self._tracks.get(req.id)
        if tr is not None:
            return tr
        f = self._model_facts.get(req.model, EngineFacts())
        est = self._analytical.isolated_prefill_s(
            f.profile, req.prompt_tokens, f.max_num_batched_tokens
        )
        self._seq += 1
        points = self._prefix.checkpoints(_prefix_of(req))
        tr = Track(req.id, req.model, latest_start(req.ttft_deadline, est), est, self._seq, points)
        self._tracks[req.id] = tr
        return tr

    def _continue_elsewhere(
        self, ctx: Ctx, req: RequestState, tr: Track, cands: list[BackendState]
    ) -> Decision:
        """A stream whose backend failed: continue on the target that gets tokens soonest."""
        ok = continuation_targets(ctx, req, tr, False) or cands
        horizon = self._p.migration.horizon_tokens
        opts = evaluate_targets(ctx, [(req, tr)], lambda _r, _t: ok, horizon)[0]
        h = max(min(req.remaining_tokens, horizon), 1)
        best = min(opts, key=lambda o: move_time(o, horizon, h, 0.0))
        prio = ctx.priority(best.backend, ctx.now)
        ctx.send(req, tr, best.backend, prio)
        return Dispatch(best.backend.name, Reason.FAILOVER, prio, f"{req.tokens} tokens so far")

    def _rescue_not_started(self, ctx: Ctx, inp: TickInputs) -> list[AscendraAction]:
        actions: list[AscendraAction] = []
        for r, src in inp.unstarted_down:
            tr = ctx.tracks[r.id]
            cands = [b for b in ctx.states.values() if b.usable(r.model, tr.exclude)]
            choice = fresh_target(ctx, r, tr, cands, force=True)
            if choice is None:
                continue
            b = choice[0]
            prio = ctx.priority(b, tr.key)
            ctx.send(r, tr, b, prio, src)
            detail = f"from={src.name} unhealthy"
            actions.append(
                Move(r.id, Dispatch(b.name, Reason.OFFLOAD_BACKEND_DOWN, prio, detail), "offload")
            )
        return actions


def fresh_target(
    ctx: Ctx, req: RequestState, tr: Track, cands: list[BackendState], force: bool
) -> tuple[BackendState, str] | None:
    """Where a request without tokens goes now, or None to hold it (unless ``force``)."""
    tight = tight_hp(ctx, req, tr, cands)
    roomy_hp = None if tight is None else place_tight(ctx, req, tr, tight)
    if roomy_hp is not None:
        return roomy_hp, Reason.TBT_FIT
    lp = [c for c in cands if c.is_lp]
    hp = [c for c in cands if c.is_hp]
    queue_ahead = ctx.params.lp_ordering == "proxy_queue" and len(ctx.held) > 0
    if not queue_ahead:
        granted = [h for h in hp if ticket_refusal(h, ctx.params.ticket, ctx.max_age) is None]
        if granted:
            best = max(granted, key=lambda h: (ctx.hit_tokens(h, tr), -h.inflight))
            return best, Reason.HP_TICKET
    if not lp:
        return (least_queued(hp), Reason.NO_LP) if hp else None
    roomy = [b for b in lp if has_room(b, ctx)]
    if ctx.params.lp_ordering == "engine_priority":
        return closest_lp(ctx, roomy or lp, req, tr)[0], Reason.LP_PRIORITY
    if roomy and not queue_ahead:
        return closest_lp(ctx, roomy, req, tr)[0], Reason.LP_ROOM
    return (closest_lp(ctx, lp, req, tr)[0], Reason.LP_ROOM) if force else None


def _prefix_of(req: RequestState) -> tuple[int, ...]:
    """The request's prompt block hashes, when the driver provides them."""
    return req.prefix_hashes


def make_ascendra(
    params: AscendraParams, backends: Sequence[BackendInfo], profiles: Mapping[str, StepTimeModel]
) -> AscendraPolicy:
    """Registry factory: the backends' latency profiles come from the driver, as values."""
    named = {facts_from_info(b).profile for b in backends}
    models = {name: m for name, m in profiles.items() if name in named}
    return AscendraPolicy(params, backends, step_models=models)
