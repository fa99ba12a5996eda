"""The scheduler's state machine (sans I/O): the policy, one mirror per live request, and
the workers' exact load counts; messages in, addressed messages out.

Theory of operation.  The scheduler drives the same ``core`` policy the single process
drives, through the same calls (``route``, ``tick``, ``on_finish``), on *mirrors*: one
``RequestState`` per live request, created from a worker's ``route``/``hello`` row and kept
current by its ``progress`` rows.  What the in-process gateway does between policy calls is
done here on the mirror at the moment a decision leaves: a dispatch (``Assign``, ``Move``,
or a ``route`` answered with a dispatch) marks the mirror dispatched on that backend and
counts it on the backend until the owning worker's ``ack`` shows it applied the message
(its own counts include it from then on).  A progress row older than the newest dispatch
sent for its request is skipped, so a stale row never turns a dispatched mirror back into a
queued one (the policy would bind it twice).

Backend snapshots are the engine facts and scraped load of the scheduler's own monitor (one
scraper per pool), health as the scheduler's breaker AND every worker's breaker, and
in-flight counts summed over workers plus the dispatches not yet acknowledged.

A worker that disconnects takes its requests with it: their mirrors end and the policy
forgets them (its reservations are freed).  Nothing here is persistent: a new leader
rebuilds all of it from the workers' ``hello`` frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ascendra_proxy.core.backend import (
    BackendInfo,
    BackendSnapshot,
    InflightCounts,
    ScrapedLoad,
    snapshot_of,
)
from ascendra_proxy.core.contracts import Policy
from ascendra_proxy.core.decisions import Action, Assign, Dispatch, Drop, Move, Reject, SetRole
from ascendra_proxy.core.request import Outcome, Phase, RequestState
from ascendra_proxy.scaleout.messages import (
    ActionMessage,
    Finish,
    Hello,
    Progress,
    RouteAsk,
    apply_progress_row,
    request_from_wire,
)

__all__ = ["Brain", "Outgoing"]

LOG_SIZE = 4096

# (worker id, or None for every worker; message)
Outgoing = tuple[str | None, ActionMessage]


@dataclass(slots=True)
class _Worker:
    offset: float  # add to the worker's times to get ours
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    down: frozenset[str] = frozenset()
    sent: int = 0  # dispatching messages sent on this connection
    unacked: deque[tuple[int, str, int]] = field(default_factory=deque)  # (seq, backend, tokens)
    requests: set[str] = field(default_factory=set)


class Brain:
    def __init__(
        self,
        policy: Policy,
        backends: Sequence[BackendInfo],
        epoch: int,
        scraped: Callable[[str, float], ScrapedLoad | None] = lambda _b, _now: None,
        healthy: Callable[[str, float], bool] = lambda _b, _now: True,
        inflight_limit: int | None = None,
    ) -> None:
        self.policy = policy
        self.epoch = epoch
        self._infos = list(backends)
        self._scraped = scraped
        self._healthy = healthy
        self._limit = inflight_limit
        self.workers: dict[str, _Worker] = {}
        self.mirrors: dict[str, RequestState] = {}
        self._owner: dict[str, str] = {}
        self._last_seq: dict[str, int] = {}  # request -> seq of the newest dispatch sent
        self.held: dict[str, frozenset[str]] = {}  # asked, not yet dispatched -> exclude
        # recent dispatches: (worker, request, backend, reason, TTFT deadline, first token?)
        self._totals: dict[str, list[int]] = {}  # backend -> [inflight, queued prompt tokens]
        self._down: dict[str, int] = {}  # backend -> workers whose breaker holds it open
        self.log: deque[tuple[str, str, str, str, float, bool]] = deque(maxlen=LOG_SIZE)

    # -- connections --------------------------------------------------------------------

    def connect(self, worker: str, hello: Hello, now: float) -> list[Outgoing]:
        """A worker (re)joins: replace whatever it had, mirror its running requests and
        decide its waiting ones."""
        self.disconnect(worker, now)
        w = _Worker(offset=now - hello.now)
        self.workers[worker] = w
        for row in hello.running:
            self._mirror(worker, row, w.offset)
        out: list[Outgoing] = []
        for row, exclude in hello.waiting:
            out += self.on_message(worker, RouteAsk(row, exclude), now)
        return out

    def disconnect(self, worker: str, now: float) -> None:
        w = self.workers.pop(worker, None)
        if w is None:
            return
        self._set_counts(w, {}, frozenset())
        while w.unacked:
            _, backend, tokens = w.unacked.popleft()
            self._add(backend, -1, -tokens)
        for rid in list(w.requests):
            self._end(rid, now, Outcome.BACKEND_FAILED)

    # -- messages -----------------------------------------------------------------------

    def on_message(
        self, worker: str, msg: RouteAsk | Progress | Finish, now: float
    ) -> list[Outgoing]:
        w = self.workers.get(worker)
        if w is None:
            return []
        if isinstance(msg, RouteAsk):
            s = self._mirror(worker, msg.request, w.offset)
            return self._route(s, frozenset(msg.exclude), now)
        if isinstance(msg, Progress):
            self._progress(w, msg)
            return []
        if msg.id in w.requests:  # the driver then calls ``recheck``: capacity changed
            self._end(msg.id, msg.at + w.offset, Outcome(msg.outcome))
        return []

    def recheck(self, now: float) -> list[Outgoing]:
        """Ask again about every held request (capacity may have changed), in arrival order."""
        out: list[Outgoing] = []
        snaps = self.snapshots(now)  # they change only when a decision is sent
        for rid, exclude in sorted(self.held.items(), key=lambda kv: self.mirrors[kv[0]].arrival):
            if rid in self.held:
                sent = self._route(self.mirrors[rid], exclude, now, snaps)
                if sent:
                    out += sent
                    snaps = self.snapshots(now)
        return out

    def tick(self, now: float) -> list[Outgoing]:
        actions = self.policy.tick(now, list(self.mirrors.values()), self.snapshots(now))
        out: list[Outgoing] = []
        for a in actions:
            out += self._emit(a, now)
        return out

    def snapshots(self, now: float) -> list[BackendSnapshot]:
        snaps = []
        for info in self._infos:
            counts = InflightCounts()
            counts.inflight, counts.queued_prompt_tokens = self._totals.get(info.name, (0, 0))
            healthy = self._healthy(info.name, now) and not self._down.get(info.name)
            snaps.append(
                snapshot_of(
                    info,
                    counts,
                    healthy=healthy,
                    scraped=self._scraped(info.name, now),
                    inflight_limit=self._limit,
                )
            )
        return snaps

    def _add(self, backend: str, inflight: int, tokens: int) -> None:
        """Running totals over workers (reported counts plus unacknowledged dispatches)."""
        t = self._totals.setdefault(backend, [0, 0])
        t[0] += inflight
        t[1] += tokens

    # -- internals ----------------------------------------------------------------------

    def _mirror(self, worker: str, row: list[object], offset: float) -> RequestState:
        s = request_from_wire(row, offset)
        old = self.mirrors.get(s.id)
        if old is not None and self._owner.get(s.id) == worker:
            old.prompt_tokens, old.prompt_tokens_exact = s.prompt_tokens, s.prompt_tokens_exact
            old.prefix_hashes = s.prefix_hashes or old.prefix_hashes
            for k in ("phase", "backend", "tokens", "first_token_at", "last_token_at"):
                setattr(old, k, getattr(s, k))
            for k in ("gap_sum", "gaps", "max_gap", "attempts", "moves", "dispatched_at"):
                setattr(old, k, getattr(s, k))
            return old
        self.mirrors[s.id] = s
        self._owner[s.id] = worker
        self.workers[worker].requests.add(s.id)
        return s

    def _progress(self, w: _Worker, msg: Progress) -> None:
        while w.unacked and w.unacked[0][0] <= msg.ack:
            _, backend, tokens = w.unacked.popleft()
            self._add(backend, -1, -tokens)
        counts = {b: (int(c[0]), int(c[1])) for b, c in msg.counts.items()}
        self._set_counts(w, counts, frozenset(msg.down))
        for row in msg.rows:
            rid = row[0]
            s = self.mirrors.get(rid)
            if s is None or rid not in w.requests or self._last_seq.get(rid, 0) > msg.ack:
                continue
            apply_progress_row(s, row, w.offset)

    def _set_counts(
        self, w: _Worker, counts: dict[str, tuple[int, int]], down: frozenset[str]
    ) -> None:
        for b, (inflight, tokens) in w.counts.items():
            self._add(b, -inflight, -tokens)
        for b, (inflight, tokens) in counts.items():
            self._add(b, inflight, tokens)
        for b in w.down:
            self._down[b] -= 1
        for b in down:
            self._down[b] = self._down.get(b, 0) + 1
        w.counts, w.down = counts, down

    def _route(
        self,
        s: RequestState,
        exclude: frozenset[str],
        now: float,
        snaps: list[BackendSnapshot] | None = None,
    ) -> list[Outgoing]:
        self.held.pop(s.id, None)
        decision = self.policy.route(s, snaps or self.snapshots(now), now, exclude)
        if isinstance(decision, Dispatch):
            return self._emit(Assign(s.id, decision), now)
        if isinstance(decision, Reject):
            return self._emit(Drop(s.id, decision), now)
        self.held[s.id] = exclude
        return []

    def _emit(self, a: Action, now: float) -> list[Outgoing]:
        if isinstance(a, SetRole):
            return [(None, ActionMessage(self.epoch, a))]
        worker = self._owner.get(a.request_id)
        s = self.mirrors.get(a.request_id)
        if worker is None or s is None:
            return []
        if isinstance(a, Assign | Move):
            self._dispatched(worker, s, a.dispatch, now)
        elif isinstance(a, Drop):
            self.held.pop(s.id, None)
        return [(worker, ActionMessage(self.epoch, a))]

    def _dispatched(self, worker: str, s: RequestState, d: Dispatch, now: float) -> None:
        """What the gateway does when it opens an attempt, done on the mirror now."""
        w = self.workers[worker]
        self.held.pop(s.id, None)
        w.sent += 1
        tokens = 0 if s.started else s.prompt_tokens
        w.unacked.append((w.sent, d.backend, tokens))
        self._add(d.backend, 1, tokens)
        self._last_seq[s.id] = w.sent
        if s.phase is not Phase.FINISHED:
            s.on_dispatch(now, d.backend)
        self.log.append((worker, s.id, d.backend, d.reason, s.ttft_deadline, s.started))

    def _end(self, rid: str, at: float, outcome: Outcome) -> None:
        s = self.mirrors.pop(rid, None)
        worker = self._owner.pop(rid, None)
        self._last_seq.pop(rid, None)
        self.held.pop(rid, None)
        if worker is not None and worker in self.workers:
            self.workers[worker].requests.discard(rid)
        if s is not None:
            s.finish(at, outcome)
            self.policy.on_finish(s, at)
