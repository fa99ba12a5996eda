"""The gateway: each admitted request's lifecycle from admission to its single ending.

Theory of operation: ``admit`` wraps a request in a core ``RequestState`` and a ``Flight``;
``proxy/stream.py``'s ``serve`` runs it (stream pump or unary path) and calls ``finish`` in
``finally``, so that the flight ends exactly once with an outcome (completed, client
disconnected, backend failed, rejected, timed out): the core's ``finish`` is idempotent and
only its first call counts, updates telemetry (outcome and SLO verdict), calls
``policy.on_finish`` and wakes held requests.

``acquire`` is the only way to an upstream attempt.  It asks the policy (``route``) with
snapshots from ``LoadBook``; a ``Dispatch`` opens an ``UpstreamAttempt`` on that backend, a
``Reject`` becomes an ``ApiError``, a ``Hold`` parks the request (counted against
``limits.max_queued_requests`` and ``limits.max_queued_prompt_tokens``; a full queue is a
429 with ``Retry-After``) until capacity changes or the next tick.  A held request whose
TTFT deadline has passed is judged by the core's admission rule
(:mod:`ascendra_proxy.core.admission`, the same rule policies shed by): refused at once
with 429 + ``Retry-After`` when its class opted in and no backend of its model is idle,
otherwise kept until the first-byte budget.  A backend that
fails before answering (connect error, 5xx, circuit open, first-byte timeout) is fed to its
breaker, excluded for this request, and the policy is asked again: retries happen here, and
only here.  Upstream 4xx (``UpstreamRejected``) escapes to the edge unchanged.

Policy decisions taken outside a request's own call path (``Policy.tick`` actions) reach a
flight through ``flight.pending``: ``Assign`` releases a held request to a backend; ``Move``
closes the current attempt so the pump asks for the next one, which is the pending dispatch;
``Drop`` ends it.  The policy decides; this module only carries decisions out.

The gateway reports each request's lifecycle to its ``observer`` (a
:class:`~ascendra_proxy.core.contracts.LifecycleObserver`: the predictor's training tap when
training rows are configured, ``proxy/learning.py``): each dispatch (with its engine
priority, and whether it replaced an attempt) and each request's end; the stream pump
reports token arrivals and answers that came whole.  What a tick's actions mean is the
core's (``core/driver.py``); ``proxy/ticker.py`` carries them out on the flights here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp

from ascendra_proxy.backends import errors as up
from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.backends.upstream import Budgets, UpstreamAttempt
from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.admission import Verdict, admission, is_shed, shed
from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.contracts import LifecycleObserver, Policy
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.driver import HoldLimits, engine_priority, hold_recheck_s
from ascendra_proxy.core.prefix import block_hashes
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.proxy.errors import ApiError
from ascendra_proxy.proxy.flight import Flight, Signal
from ascendra_proxy.proxy.load import LoadBook
from ascendra_proxy.proxy.runtime import BackendRuntime, Backends
from ascendra_proxy.proxy.telemetry import Telemetry
from ascendra_proxy.proxy.validate import GenerationRequest

if TYPE_CHECKING:
    from ascendra_proxy.proxy.learning import Learning
    from ascendra_proxy.proxy.request_log import RequestLog

log = logging.getLogger(__name__)

ABORT_DRAIN_S = 2.0


class Gateway:
    def __init__(
        self,
        cfg: ProxyConfig,
        backends: Backends,
        policy: Policy,
        telemetry: Telemetry,
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.backends = backends
        self.policy = policy
        self.telemetry = telemetry
        self.clock = clock
        self.load = LoadBook(backends, cfg.limits.max_inflight_per_backend)
        self.flights: dict[str, Flight] = {}
        self.held = 0
        self.held_prompt_tokens = 0
        self.capacity = Signal()
        self.hold_limits = HoldLimits(
            cfg.limits.max_queued_requests,
            cfg.timeouts.first_byte_s,
            cfg.limits.max_queued_prompt_tokens,
        )
        self.budgets = Budgets(cfg.timeouts.first_byte_s, cfg.timeouts.idle_s, cfg.timeouts.total_s)
        self._context = _context_limits(cfg)
        self._block_size = _block_sizes(cfg)
        self._tasks: set[asyncio.Task[None]] = set()
        self.roles: dict[str, tuple[Role, bool]] = {}  # policy SetRole actions: (role, draining)
        self.learning: Learning | None = None  # the learned predictor's side (app sets it)
        self.observer: LifecycleObserver | None = None  # told of every lifecycle event
        self.request_log: RequestLog | None = None  # serve --request-log: a line per request

    # -- lifecycle ------------------------------------------------------------------------

    def admit(self, gen: GenerationRequest, slo: SLO, slo_class: str | None) -> Flight:
        now = self.clock()
        max_tokens = gen.max_tokens
        if max_tokens is None:
            max_tokens = max(1, self._context.get(gen.model, 1) - gen.prompt_tokens)
        state = RequestState(
            id="req-" + secrets.token_hex(8),
            model=gen.model,
            prompt_tokens=gen.prompt_tokens,
            max_tokens=max_tokens,
            slo=slo,
            arrival=now,
            prompt_tokens_exact=gen.prompt_exact,
            slo_class=slo_class,
        )
        prompt = gen.body.get("prompt") if gen.prompt_exact else None
        if isinstance(prompt, list) and prompt and type(prompt[0]) is int:
            self.set_prompt_ids(state, prompt)
        flight = Flight(state, gen)
        self.flights[state.id] = flight
        return flight

    def set_prompt_ids(self, state: RequestState, ids: list[int]) -> None:
        """The exact prompt is known: exact size, and block hashes for prefix affinity."""
        state.prompt_tokens = len(ids)
        state.prompt_tokens_exact = True
        state.prefix_hashes = block_hashes(ids, self._block_size.get(state.model, 16))

    def finish(self, flight: Flight, outcome: Outcome) -> None:
        """End the flight (first call wins); releases its attempt and wakes held requests."""
        self.end_attempt(flight)
        now = self.clock()
        if not flight.state.finish(now, outcome):
            return
        self.flights.pop(flight.state.id, None)
        self.telemetry.request_done(flight.state.model, outcome.value, now - flight.state.arrival)
        self.telemetry.slo_done(flight.state)
        if flight.moved is not None:
            self.telemetry.moved_done(flight.state, flight.moved)
        if self.observer is not None:
            self.observer.on_finished(flight.state.id, outcome)
        if self.request_log is not None:
            self.request_log.write(flight)
        try:
            self.policy.on_finish(flight.state, now)
        finally:
            self.capacity.notify()

    # -- attempts -------------------------------------------------------------------------

    async def acquire(self, flight: Flight) -> UpstreamAttempt:
        """Route and open an upstream attempt, retrying elsewhere on pre-answer failures."""
        while True:
            dispatch = await self._route(flight)
            backend = self.backends.get(dispatch.backend)
            if backend is None:
                raise ApiError(500, f"policy chose unknown backend {dispatch.backend!r}")
            attempt = self._start(flight, backend, dispatch)
            try:
                if not backend.breaker.available(self.clock()):
                    raise up.CircuitOpen(backend.name, "circuit breaker open")
                await attempt.open()
            except up.AttemptClosed:
                if flight.pending is None and flight.dropped is None:
                    raise
                self.requeue(flight)  # a move or drop while connecting: _route carries it out
                continue
            except up.UpstreamUnavailable as exc:
                self.attempt_failed(flight, exc)
                continue
            except up.UpstreamRejected:
                backend.breaker.record_success()
                self.end_attempt(flight, complete=True)
                raise
            backend.breaker.record_success()
            if flight.pending is not None:  # the policy moved it as the answer came in
                self.requeue(flight)
                continue
            return attempt

    def leave_attempt(self, flight: Flight, exc: up.UpstreamError) -> None:
        """An attempt ended before its answer was complete: closed by a policy move or drop
        (the flight waits for the pending action) or failed (breaker, telemetry, exclusion)."""
        if flight.pending is not None or flight.dropped is not None:
            self.requeue(flight)
        else:
            self.attempt_failed(flight, exc)

    def requeue(self, flight: Flight) -> None:
        """Leave the current attempt for a pending move; a stream that already has tokens
        (a continuation being opened) keeps them and stays started."""
        self.end_attempt(flight)
        if not flight.state.started and not flight.state.finished:
            flight.state.on_requeue()

    def _start(self, flight: Flight, backend: BackendRuntime, d: Dispatch) -> UpstreamAttempt:
        state = flight.state
        if flight.attempt is not None:
            self.end_attempt(flight)
        priority = engine_priority(backend.info, d.priority)
        gen = flight.gen
        cont = flight.continuation
        if cont is None:
            request = backend.adapter.prepare(gen.endpoint, gen.body, state.id, priority)
        else:
            request = backend.adapter.prepare(Endpoint.COMPLETIONS, cont.body, state.id, priority)
        headers = backend.stream_headers if request.stream else backend.headers
        attempt = UpstreamAttempt(
            backend.name, backend.url, backend.session, request, headers, self.budgets
        )
        state.on_dispatch(self.clock(), backend.name)
        flight.note_dispatch(state.dispatched_at or 0.0, backend.name, d.reason)
        if self.observer is not None:  # replaced: a retry, offload or migration
            self.observer.on_dispatched(
                state.id, backend.name, priority, flight.backend is not None
            )
        flight.queued_tokens = 0 if state.started else state.prompt_tokens
        backend.begin(flight.queued_tokens)
        flight.backend, flight.attempt = backend, attempt
        return attempt

    def attempt_failed(self, flight: Flight, exc: up.UpstreamError) -> None:
        """Account a failed attempt: breaker, telemetry, exclusion; the flight may retry."""
        backend = flight.backend
        if backend is not None:
            if not isinstance(exc, up.CircuitOpen) and _is_backend_fault(exc):
                backend.breaker.record_failure(self.clock())
            self.telemetry.upstream_error(backend.name, exc.kind)
            flight.exclude.add(backend.name)
        flight.last_error = exc
        self.end_attempt(flight)
        if not flight.state.started and not flight.state.finished:
            flight.state.on_requeue()
            if backend is not None:
                self.telemetry.retry(backend.name)

    def end_attempt(self, flight: Flight, complete: bool = False) -> None:
        """Release the current attempt; abort it upstream unless it completed.

        A completed attempt's connection goes back to the backend's pool (in the background:
        the client has its answer already); any other attempt is closed, which is the abort.
        """
        attempt, backend = flight.attempt, flight.backend
        if attempt is None or backend is None:
            return
        flight.attempt = None
        if complete:
            self.spawn(attempt.release())
        else:
            attempt.close()
        backend.end(flight.queued_tokens)
        flight.queued_tokens = 0
        if not complete and backend.adapter.needs_abort_call:
            self.spawn(
                backend.adapter.abort(backend.session, backend.url, attempt.request.request_id)
            )
        self.capacity.notify()

    def first_token(self, flight: Flight) -> None:
        if flight.backend is not None and flight.queued_tokens:
            flight.backend.first_token(flight.queued_tokens)
            flight.queued_tokens = 0

    # -- routing ----------------------------------------------------------------------------

    async def _route(self, flight: Flight) -> Dispatch:
        held = False
        held_at = self.clock()
        tokens = flight.state.prompt_tokens
        try:
            while True:
                if flight.dropped is not None:
                    raise self._rejection(flight, flight.dropped)
                if flight.pending is not None:
                    dispatch, flight.pending = flight.pending, None
                    return dispatch
                now = self.clock()
                decision = self.policy.route(
                    flight.state, self.load.snapshots(now), now, frozenset(flight.exclude)
                )
                if isinstance(decision, Dispatch):
                    self.telemetry.decision(decision.reason)
                    return decision
                if isinstance(decision, Reject):
                    self.telemetry.decision(decision.reason)
                    raise self._rejection(flight, decision)
                if not held:  # a Hold counts once, when parked (not at every re-ask)
                    self._check_queue_room(decision, tokens)
                    self.telemetry.decision(decision.reason)
                    held = True
                    self.held += 1
                    self.held_prompt_tokens += tokens
                await self._wait_for_capacity(flight, held_at)
        finally:
            if held:
                self.held -= 1
                self.held_prompt_tokens -= tokens

    def _check_queue_room(self, hold: Hold, prompt_tokens: int) -> None:
        if not self.hold_limits.room(self.held):
            what = f"{self.held} requests waiting"
        elif not self.hold_limits.token_room(self.held_prompt_tokens, prompt_tokens):
            what = f"{self.held_prompt_tokens} prompt tokens waiting"
        else:
            return
        raise ApiError(
            429,
            f"proxy queue is full ({what}; {hold.reason})",
            code="queue_full",
        )

    async def _wait_for_capacity(self, flight: Flight, held_at: float) -> None:
        now = self.clock()
        # a stream that already started (a continuation) waits from when it was held
        waited = now - (held_at if flight.state.started else flight.state.arrival)
        if self.hold_limits.expired(waited):
            raise ApiError(504, "timed out waiting for a backend with room", code="queue_timeout")
        if not flight.state.started and now > flight.state.ttft_deadline:
            self._shed_if_refused(flight, now, waited)
        await self.capacity.wait(hold_recheck_s(self.policy.tick_interval_s))

    def _shed_if_refused(self, flight: Flight, now: float, waited: float) -> None:
        """The admission rule for a held request past its deadline (no prediction here:
        the deadline has passed, so it is late on every backend)."""
        state = flight.state
        idle = any(
            s.healthy and s.model == state.model and s.inflight == 0
            for s in self.load.snapshots(now)
        )
        if admission(state, now, None, idle) is Verdict.REFUSE:
            # it waited this long and got no backend: the queue is at least this deep
            raise self._rejection(flight, shed(state, now, waited))

    def _rejection(self, flight: Flight, r: Reject) -> ApiError:
        last = flight.last_error
        if last is not None and r.status == 503:
            log.warning("request %s: every backend tried failed; last: %s", flight.state.id, last)
            message = f"every backend tried failed; last: {last.public}"
            return ApiError(502, message, code=last.kind)
        headers = {} if r.retry_after_s is None else {"Retry-After": str(r.retry_after_s)}
        if is_shed(r):
            flight.outcome = Outcome.SHED
        return ApiError(
            r.status,
            r.message,
            code=r.code,
            param="model" if r.status == 404 else None,
            headers=headers,
        )

    def warm(self, flight: Flight, backend_name: str, priority: int | None = None) -> bool:
        """Send the flight's prompt to a backend as a discarded one-token generation."""
        backend = self.backends.get(backend_name)
        if backend is None:
            return False
        body = {k: v for k, v in flight.gen.body.items() if k not in _WARM_DROP}
        body["max_tokens"] = 1
        rid = flight.state.id + "-warm"
        priority = engine_priority(backend.info, priority)
        request = backend.adapter.prepare(flight.gen.endpoint, body, rid, priority)
        self.spawn(
            _post_discard(
                backend.session,
                backend.url + request.path,
                request.body,
                backend.headers,
                self.budgets.first_byte_s,
            )
        )
        return True

    # -- owned background work ----------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(_logged(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Let pending upstream aborts finish (bounded), then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=ABORT_DRAIN_S)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _is_backend_fault(exc: up.UpstreamError) -> bool:
    if isinstance(exc, up.InStreamError):
        return not exc.is_client_error
    return isinstance(exc, up.UpstreamUnavailable | up.StreamBroken)


_WARM_DROP = frozenset(
    {"stream", "stream_options", "max_completion_tokens", "n", "rid", "priority"}
)


async def _post_discard(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], limit_s: float
) -> None:
    timeout = aiohttp.ClientTimeout(total=limit_s)
    async with session.post(
        url, data=body, headers=headers, timeout=timeout, allow_redirects=False
    ) as resp:
        await resp.read()


def _block_sizes(cfg: ProxyConfig) -> dict[str, int]:
    """Per model, the KV block size used for prompt block hashes (first backend's setting)."""
    sizes: dict[str, int] = {}
    for _, b in cfg.backends():
        sizes.setdefault(b.model, b.engine_settings.block_size)
    return sizes


def _context_limits(cfg: ProxyConfig) -> dict[str, int]:
    limits: dict[str, int] = {}
    for _, b in cfg.backends():
        ctx = b.engine_settings.max_model_len
        limits[b.model] = min(ctx, limits.get(b.model, ctx))
    return limits


async def _logged(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except Exception as exc:  # an abort that fails must not crash anything; log it
        log.warning("background upstream call failed: %s: %s", type(exc).__name__, exc)
