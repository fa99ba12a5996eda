"""The simulated proxy: owns the requests, asks the policy, and carries out what it decides.

Theory of operation: this is ``proxy/gateway.py`` + ``proxy/ticker.py`` in virtual time, with
the same policy object and the same bookkeeping, minus HTTP.

* **Admission and routing.**  A request reaching the proxy becomes a :class:`Flight` and is
  routed at once (``policy.route`` with fresh snapshots).  ``Dispatch`` opens an attempt on
  that backend (``RequestState.on_dispatch``, the backend's exact counts grow, the engine
  request leaves after the network hop); ``Reject`` ends it; ``Hold`` parks it within the
  same :class:`~ascendra_proxy.core.driver.HoldLimits` as the live gateway (at most
  ``limits.max_queued_requests`` requests and ``limits.max_queued_prompt_tokens`` prompt
  tokens, else 429 ``queue_full``; ended with 504 ``queue_timeout`` once it waited
  ``timeouts.first_byte_s``).  Held requests ask again whenever capacity changes (an
  attempt ends, a request finishes, a tick acts: the live gateway's ``Signal``) and at least
  every ``min(tick, 50 ms)``, in the order they were held.
* **The monitor tick** calls ``policy.tick`` with every unfinished request (the lifecycle
  observer, if any, sees the same requests and snapshots first) and carries out each action
  through :func:`ascendra_proxy.core.driver.carry_out`, the table every driver shares:
  ``Assign`` binds a held request (skipped if it already has an attempt), ``Move`` closes
  the current attempt (the engine frees it ``abort_s`` later) and dispatches again - before
  the first token an offload, after it a token-exact continuation (prompt ids + generated
  ids, remaining ``max_tokens``), refused like the live proxy's when the flight has no exact
  continuation - ``Drop`` ends the request, ``Warm`` sends the prompt to a backend as a
  one-token request whose output is discarded, ``SetRole`` is mirrored in the role
  timeline.  Actions naming a request that finished meanwhile are skipped and counted;
  decisions are counted under the same labels as the proxy's.
* **Tokens.**  Outputs from an engine step reach the proxy one hop after the step ended; an
  output of a closed attempt is dropped (that is what makes a continuation token-exact:
  the proxy's record, not the old engine, decides what was sent).  The first token releases
  the prompt's queued-token count; the final one completes the request.
* **Ending** is single: ``RequestState.finish`` returns False on every later call, the
  policy's ``on_finish`` runs once, and the client-side record gets its end and outcome.
* **Lifecycle events** go to ``observer`` (``core/contracts.py``'s ``LifecycleObserver``,
  e.g. the predictor's training tap) as the live gateway reports them: dispatches (with
  the engine priority sent), tokens of open attempts, ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.admission import Verdict, admission, is_shed, shed
from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.contracts import LifecycleObserver, Policy
from ascendra_proxy.core.decisions import (
    Action,
    Assign,
    Dispatch,
    Drop,
    Move,
    Reject,
    SetRole,
    Warm,
)
from ascendra_proxy.core.driver import (
    Carried,
    Effect,
    HoldLimits,
    RequestFacts,
    action_reason,
    carry_out,
    engine_priority,
    hold_recheck_s,
)
from ascendra_proxy.core.request import Outcome
from ascendra_proxy.engine import EngineRequest, SamplingSpec, TokenOutput
from ascendra_proxy.sim.backend import SimBackend
from ascendra_proxy.sim.events import EventQueue, Kind
from ascendra_proxy.sim.flight import Attempt, Flight
from ascendra_proxy.sim.setup import SimSettings
from loadgen.metrics import Outcome as RecordOutcome

__all__ = ["SimError", "SimProxy", "Tally"]


class SimError(RuntimeError):
    """The policy asked for something impossible (a bug in the policy, not a runtime state)."""


@dataclass(slots=True)
class Tally:
    """Counts of what the policy decided, by reason (deterministic, JSON-ready)."""

    decisions: Counter[str] = field(default_factory=Counter)
    offloads: Counter[str] = field(default_factory=Counter)
    migrations: Counter[str] = field(default_factory=Counter)
    warms: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    # Tokens an engine had computed for attempts the proxy aborted, by why they were closed
    # (work thrown away: a partial prefill before an offload, the KV of a migrated stream).
    aborted_computed: Counter[str] = field(default_factory=Counter)
    roles: list[dict[str, Any]] = field(default_factory=list)


class SimProxy:
    def __init__(
        self,
        cfg: ProxyConfig,
        policy: Policy,
        backends: Sequence[SimBackend],
        settings: SimSettings,
        queue: EventQueue,
        on_end: Callable[[Flight], None],
    ) -> None:
        self.policy = policy
        self.backends = {b.name: b for b in backends}
        self._order = list(backends)
        self._settings = settings
        self._queue = queue
        self._on_end = on_end
        self._limit = cfg.limits.max_inflight_per_backend
        lim = cfg.limits
        self._hold = HoldLimits(
            lim.max_queued_requests, cfg.timeouts.first_byte_s, lim.max_queued_prompt_tokens
        )
        self._held_prompt_tokens = 0
        self._recheck_every = hold_recheck_s(policy.tick_interval_s)
        self._recheck_at: float | None = None
        self._engine_ids: dict[str, tuple[Flight, Attempt]] = {}
        self.flights: dict[str, Flight] = {}  # unfinished, in admission order
        self.held: dict[str, Flight] = {}  # parked by a Hold, in the order they were held
        self.tally = Tally()
        self.observer: LifecycleObserver | None = None  # told of every lifecycle event

    def snapshots(self, now: float) -> list[BackendSnapshot]:
        return [b.snapshot(now, self._limit) for b in self._order]

    # -- routing ------------------------------------------------------------------------

    def admit(self, now: float, f: Flight) -> None:
        self.flights[f.id] = f
        self._route(now, f, None)

    def _route(self, now: float, f: Flight, snaps: list[BackendSnapshot] | None) -> bool:
        """Ask the policy about ``f``; True when that changed any backend's load."""
        snaps = self.snapshots(now) if snaps is None else snaps
        d = self.policy.route(f.state, snaps, now, frozenset(f.exclude))
        if isinstance(d, Dispatch):
            self.unhold(f)
            self.tally.decisions[d.reason] += 1
            self.dispatch(now, f, d)
            return True
        if isinstance(d, Reject):
            self.unhold(f)
            self.tally.decisions[d.reason] += 1
            self.end(now, f, _outcome_of(d), f"{d.status} {d.code}: {d.message}")
            return True
        if not f.held:
            tokens = f.state.prompt_tokens
            full = not self._hold.room(len(self.held))
            if full or not self._hold.token_room(self._held_prompt_tokens, tokens):
                self.end(now, f, Outcome.REJECTED, "429 queue_full")
                return True
            f.held = True
            self.held[f.id] = f
            self._held_prompt_tokens += tokens
            self.tally.decisions[d.reason] += 1
            self._arm_recheck(now + self._recheck_every)
        return False

    def unhold(self, f: Flight) -> None:
        if f.held:
            f.held = False
            del self.held[f.id]
            self._held_prompt_tokens -= f.state.prompt_tokens

    def _arm_recheck(self, t: float) -> None:
        if self._recheck_at is None or t < self._recheck_at:
            self._recheck_at = t
            self._queue.push(t, Kind.RECHECK, t)

    def notify(self, now: float) -> None:
        """Capacity changed: held requests ask again (coalesced per instant)."""
        if self.held:
            self._arm_recheck(now)

    def on_recheck(self, now: float, armed_for: float) -> None:
        if armed_for != self._recheck_at:
            return  # superseded by an earlier recheck
        self._recheck_at = None
        snaps: list[BackendSnapshot] | None = None
        for f in list(self.held.values()):
            if not f.held:
                continue
            if snaps is None:
                snaps = self.snapshots(now)
            if self._shed_late(now, f, snaps) or self._route(now, f, snaps):
                snaps = None
            elif f.held and self._hold.expired(now - f.state.arrival):
                self.end(now, f, Outcome.TIMED_OUT, "504 queue_timeout")
        if self.held:
            self._arm_recheck(now + self._recheck_every)

    def _shed_late(self, now: float, f: Flight, snaps: list[BackendSnapshot]) -> bool:
        """The admission rule for a held request past its deadline, as the live gateway
        applies it (True: it was refused and ended)."""
        st = f.state
        if st.started or now <= st.ttft_deadline:
            return False
        idle = any(s.healthy and s.model == st.model and s.inflight == 0 for s in snaps)
        if admission(st, now, None, idle) is not Verdict.REFUSE:
            return False
        r = shed(st, now, now - st.arrival)
        self.tally.drops[r.reason] += 1
        self.end(now, f, Outcome.SHED, f"{r.status} {r.code}: {r.message}")
        return True

    # -- attempts -------------------------------------------------------------------------

    def dispatch(self, now: float, f: Flight, d: Dispatch) -> None:
        b = self.backends.get(d.backend)
        if b is None:
            raise SimError(f"policy chose unknown backend {d.backend!r} for {f.id}")
        self._close(now, f, abort=True)
        st = f.state
        prio = engine_priority(b.info, d.priority)
        if self.observer is not None:
            self.observer.on_dispatched(f.id, b.name, prio, f.attempts > 0)
        st.on_dispatch(now, b.name)
        queued = 0 if st.started else st.prompt_tokens
        b.begin(queued)
        f.attempts += 1
        engine_id = f"{f.id}#{f.attempts}"
        ids = f.prompt_ids + f.generated if f.generated else f.prompt_ids
        rem = f.remaining
        spec = SamplingSpec(max_tokens=rem, min_tokens=rem, ignore_eos=True, seed=f.item.index)
        req = EngineRequest(engine_id, ids, spec, arrival_time=now, priority=prio or 0)
        a = Attempt(engine_id, b, req, queued)
        f.attempt = a
        f.route.append(b.name)
        self._engine_ids[engine_id] = (f, a)
        self.send(now, a)

    def send(self, now: float, a: Attempt) -> None:
        """The attempt's request reaches its engine after the hop and the frontend."""
        self._queue.push(now + self._settings.network_s + a.backend.frontend_s, Kind.ENGINE_ADD, a)

    def _close(self, now: float, f: Flight, abort: bool, why: str = "redispatch") -> None:
        a = f.attempt
        if a is None:
            return
        f.attempt = None
        a.open = False
        a.closed_by = a.closed_by or why
        a.backend.end(a.queued_tokens)
        a.queued_tokens = 0
        del self._engine_ids[a.engine_id]
        if abort:
            self._queue.push(now + self._settings.abort_s, Kind.ENGINE_ABORT, a)
        self.notify(now)

    def on_outputs(self, now: float, outputs: Sequence[TokenOutput]) -> None:
        ids = self._engine_ids
        seen = now + self._settings.client_network_s  # when the client gets the chunk
        for out in outputs:
            entry = ids.get(out.request_id)
            if entry is None:
                continue  # a closed attempt or a warm-up
            f, a = entry
            new = out.new_token_ids
            n = len(new)
            if self.observer is not None:
                self.observer.on_tokens(f.id, now, n, a.backend.name)
            f.state.on_tokens(now, n)
            f.generated.extend(new)
            rec = f.record  # RequestRecord.add_chunk, inlined (the hottest loop of a run)
            rec.chunk_times.append(seen)
            rec.chunk_tokens.append(n)
            if a.queued_tokens:
                a.backend.first_token(a.queued_tokens)
                a.queued_tokens = 0
            if out.finish_reason is not None:
                self._close(now, f, abort=False)
                self.end(now, f, Outcome.COMPLETED)

    def on_rejected(self, now: float, a: Attempt, message: str) -> None:
        """The engine answered 400 (context length): the request fails, as in the proxy."""
        entry = self._engine_ids.get(a.engine_id)
        if entry is None:
            return
        f = entry[0]
        self._close(now, f, abort=False)
        self.end(now, f, Outcome.REJECTED, f"400 {message}")

    def end(self, now: float, f: Flight, outcome: Outcome, error: str | None = None) -> None:
        self._close(now, f, abort=True, why=outcome.value)
        self.unhold(f)
        if not f.state.finish(now, outcome):
            return
        del self.flights[f.id]
        rec = f.record
        rec.end_s = now + self._settings.client_network_s
        if outcome is Outcome.COMPLETED:
            rec.outcome = RecordOutcome.COMPLETED
        elif outcome is Outcome.CLIENT_DISCONNECTED:
            rec.outcome = RecordOutcome.DISCONNECTED
        else:
            rec.outcome = RecordOutcome.FAILED
        rec.error = error
        if f.events:
            rec.events = f.events
        self.policy.on_finish(f.state, now)
        if self.observer is not None:
            self.observer.on_finished(f.id, outcome)
        self.notify(now)
        self._on_end(f)

    # -- the monitor tick -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """A monitor tick: the observer sees it first, then the policy (if it ticks)."""
        states = [f.state for f in self.flights.values()]
        snaps = self.snapshots(now)
        if self.observer is not None:
            self.observer.on_tick(now, states, snaps)
        if self.policy.tick_interval_s is None:
            return  # an observation-only tick
        for action in self.policy.tick(now, states, snaps):
            self.apply(now, action)

    def apply(self, now: float, action: Action) -> Carried:
        """Carry out one action as ``core/driver.py`` says, and count it."""
        carried = carry_out(action, _Target(self, now))
        t = self.tally
        if carried.label is not None:
            t.decisions[carried.label] += 1
        reason = action_reason(action)
        effect = carried.effect
        if effect is Effect.SKIP:
            assert carried.skip is not None
            t.skipped[f"{type(action).__name__}:{carried.skip.value}"] += 1
        elif effect is Effect.OFFLOAD:
            t.offloads[reason] += 1
        elif effect is Effect.MIGRATE:
            t.migrations[reason] += 1
        elif effect is Effect.DROP:
            t.drops[reason] += 1
        elif effect is Effect.WARM:
            t.warms[reason] += 1
        elif isinstance(action, SetRole):
            t.roles.append(
                {
                    "t": round(now, 6),
                    "backend": action.backend,
                    "role": action.role.value,
                    "draining": action.draining,
                    "reason": action.reason,
                }
            )
        return carried


class _Target:
    """:class:`~ascendra_proxy.core.driver.ActionTarget` for the simulated proxy at ``now``."""

    __slots__ = ("now", "proxy")

    def __init__(self, proxy: SimProxy, now: float) -> None:
        self.proxy = proxy
        self.now = now

    def facts(self, request_id: str) -> RequestFacts | None:
        f = self.proxy.flights.get(request_id)
        if f is None:
            return None
        return RequestFacts(started=f.state.started, has_attempt=f.attempt is not None)

    def can_continue(self, request_id: str) -> bool:
        f = self.proxy.flights[request_id]
        return f.exact_continuation and f.attempt is not None

    def assign(self, action: Assign) -> None:
        f = self.proxy.flights[action.request_id]
        self.proxy.unhold(f)
        self.proxy.dispatch(self.now, f, action.dispatch)

    def move(self, action: Move, effect: Effect) -> None:
        proxy, now, dispatch = self.proxy, self.now, action.dispatch
        f = proxy.flights[action.request_id]
        kind = "offload" if effect is Effect.OFFLOAD else "migration"
        src = f.attempt.backend.name if f.attempt is not None else None
        f.events.append(
            {
                "t": round(now, 6),
                "kind": kind,
                "from": src,
                "to": dispatch.backend,
                "reason": dispatch.reason,
                "tokens": len(f.generated),
            }
        )
        proxy.unhold(f)
        if f.attempt is not None:
            f.attempt.closed_by = kind  # dispatch closes it (observers see the old attempt)
        proxy.dispatch(now, f, dispatch)

    def drop(self, action: Drop) -> None:
        f = self.proxy.flights[action.request_id]
        r = action.reject
        self.proxy.end(self.now, f, _outcome_of(r), f"{r.status} {r.code}: {r.message}")

    def warm(self, action: Warm) -> bool:
        proxy, now = self.proxy, self.now
        f = proxy.flights[action.request_id]
        b = proxy.backends.get(action.backend)
        if b is None:
            raise SimError(f"policy warmed unknown backend {action.backend!r}")
        f.warms += 1
        engine_id = f"{f.id}#warm{f.warms}"
        spec = SamplingSpec(max_tokens=1, ignore_eos=True, seed=f.item.index)
        prio = engine_priority(b.info, action.priority)
        req = EngineRequest(engine_id, f.prompt_ids, spec, arrival_time=now, priority=prio or 0)
        f.events.append({"t": round(now, 6), "kind": "warm", "to": b.name, "reason": action.reason})
        proxy.send(now, Attempt(engine_id, b, req, 0))
        return True

    def set_role(self, action: SetRole) -> None:
        return None  # the tally mirrors it (SimProxy.apply)


def _outcome_of(reject: Reject) -> Outcome:
    return Outcome.SHED if is_shed(reject) else Outcome.REJECTED
