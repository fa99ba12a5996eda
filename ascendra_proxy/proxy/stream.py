"""Serving one admitted request: the stream pump (upstream SSE -> client SSE, counting tokens
as they pass) and the unary path.

Theory of operation: ``serve`` runs a flight the gateway admitted through ``StreamPump`` or
``serve_unary`` and ends it exactly once (``Gateway.finish`` in ``finally``) with the
outcome it reached; a cancelled handler (the client went away) is ``client_disconnected``.
Two objects per streaming request, deliberately separate:

- ``ClientStream`` is what the client sees: one HTTP response (headers sent lazily, with the
  first chunk that carries a token, so a backend failing before that is retried invisibly)
  and a ``StreamRecord``: one identity (``id``, ``created``, ``model`` of the first upstream
  chunk) and everything sent (prompt token ids, generated token ids, text, finish reason).
- An ``UpstreamAttempt`` (``backends/upstream.py``) is one try on one backend.

``StreamPump.run`` forwards attempt after attempt into the same client stream.  Per upstream
read it decodes SSE events, parses each once (``ChunkReader.read``: counts *tokens*, never
chunks, records them, renders the client's bytes, the original ones when nothing must be
stripped), and writes everything of that read in one ``write``.  Token arrivals feed
``RequestState`` (TTFT, every gap, mean TBT, all available online to the policy) and the
histograms, per token: the tokens of one read (several events, or one event with several
tokens) are one gap to the previous token and zero gaps among themselves, so a stream of
``k`` tokens records ``k - 1`` gaps however the engine's bytes were coalesced.  Terminal
chunks a reader holds back for the usage chunk's ``system_fingerprint``
(see ``backends/chunks.py``) are flushed when an attempt ends without one: at ``[DONE]``, at
the end of the body, on failure.

When an attempt ends abnormally, ``_next_attempt`` is the one swap point: before the client
saw anything, the gateway retries elsewhere (or follows a policy ``Move``); after that,
``resume`` is asked for a continuation attempt: a token-exact continuation built from
``ClientStream``'s record (``backends/continuation.py``) on the backend the policy picks, read
by a ``ContinuationReader`` that keeps the client's stream identity, and the loop carries on
with the same client stream.  When none exists the pump reports an OpenAI-shaped error event
followed by ``data: [DONE]``.  A client disconnect cancels the handler task (the app runs
with ``handler_cancellation``), which unwinds through here into the gateway, where the
attempt is closed (vLLM's abort) and, for SGLang, ``/abort_request`` is called.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from ascendra_proxy.backends import errors as up
from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.backends.chunks import ChunkReader, StreamRecord, cached_prompt_tokens
from ascendra_proxy.backends.continuation import ContinuationReader, plan
from ascendra_proxy.backends.sse import DONE, SSEDecoder, SSEOverflow, frame
from ascendra_proxy.backends.upstream import UpstreamAttempt
from ascendra_proxy.core.request import Outcome
from ascendra_proxy.proxy.errors import ApiError, error_json
from ascendra_proxy.proxy.flight import Flight
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.histogram import FastHistogram

log = logging.getLogger(__name__)

_API_OUTCOMES = {502: Outcome.BACKEND_FAILED, 504: Outcome.TIMED_OUT}
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE_FRAME = frame(DONE)


async def serve(gw: Gateway, http: web.Request, flight: Flight) -> web.StreamResponse:
    """Run an admitted flight to its answer; it ends exactly once, whatever happens."""
    outcome = Outcome.BACKEND_FAILED
    try:
        if flight.gen.stream:
            resp = await StreamPump(gw, flight, http).run()
        else:
            resp = await serve_unary(gw, flight)
        outcome = flight.outcome or Outcome.COMPLETED
        return resp
    except asyncio.CancelledError:
        outcome = Outcome.CLIENT_DISCONNECTED
        raise
    except ApiError as exc:
        outcome = _API_OUTCOMES.get(exc.status, Outcome.REJECTED)
        if flight.outcome is Outcome.SHED:  # refused by the admission rule
            outcome = Outcome.SHED
        elif client_fault(exc.status):
            outcome = Outcome.CLIENT_ERROR
        raise
    except up.UpstreamRejected as exc:
        outcome = Outcome.CLIENT_ERROR if client_fault(exc.status) else Outcome.REJECTED
        raise
    finally:
        gw.finish(flight, outcome)


def client_fault(status: int | None) -> bool:
    """A 4xx that blames the request itself (not 408 timeout or 429 overload): the
    ``client_error`` outcome, which is no SLO miss."""
    return status is not None and 400 <= status < 500 and status not in (408, 429)


class ClientStream:
    """The client-facing side of a stream, independent of which backend feeds it."""

    __slots__ = ("held", "http", "record", "resp")

    def __init__(self, http: web.Request) -> None:
        self.http = http
        self.resp: web.StreamResponse | None = None
        self.held: list[bytes] = []  # token-less chunks waiting for the first token
        self.record = StreamRecord()  # what the client has been sent (identity, ids, text)

    @property
    def started(self) -> bool:
        return self.resp is not None

    async def write(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:
            resp = self.resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
            await resp.prepare(self.http)
            if self.held:
                data = b"".join((*self.held, data))
                self.held = []
        await resp.write(data)

    async def end(self) -> web.StreamResponse:
        if self.resp is None:
            await self.write(b"")
        assert self.resp is not None
        await self.resp.write_eof()
        return self.resp


class StreamPump:
    def __init__(self, gw: Gateway, flight: Flight, http: web.Request) -> None:
        self.gw = gw
        self.flight = flight
        self.client = ClientStream(http)
        flight.record = self.client.record
        self._gaps: FastHistogram | None = None  # the gap histogram of the current backend
        self._gaps_backend = ""

    async def run(self) -> web.StreamResponse:
        attempt = await self.gw.acquire(self.flight)
        try:
            while True:
                try:
                    await self._forward(attempt)
                except up.UpstreamError as exc:
                    nxt = await self._next_attempt(exc)
                    if nxt is None:
                        return await self._fail(exc)
                    attempt = nxt
                    continue
                self.gw.end_attempt(self.flight, complete=True)
                self.flight.outcome = Outcome.COMPLETED
                return await self.client.end()
        except ConnectionResetError:  # the client went away while we wrote
            self.flight.outcome = Outcome.CLIENT_DISCONNECTED
            return self.client.resp or web.Response(status=499)

    async def _forward(self, attempt: UpstreamAttempt) -> None:
        """Pump one attempt until [DONE] (returns) or failure (raises UpstreamError)."""
        client, flight = self.client, self.flight
        cont = flight.continuation
        reader = (
            ChunkReader(attempt.backend, attempt.request.asks, client.record)
            if cont is None
            else ContinuationReader(attempt.backend, attempt.request.asks, client.record, cont)
        )
        resubmitted, flight.resubmitted = flight.resubmitted, False
        usage_before = client.record.usage
        try:
            await self._pump(attempt, reader)
        except up.UpstreamError:
            held = reader.flush()  # a terminal chunk still waiting for its fingerprint
            if held is not None:
                await client.write(held)
            raise
        finally:
            if resubmitted:  # a move's target: what it was sent, what its engine had cached
                usage = client.record.usage
                cached = None if usage is usage_before else cached_prompt_tokens(usage)
                sent = flight.state.prompt_tokens if cont is None else len(cont.body["prompt"])
                self.gw.telemetry.resubmission(attempt.backend, sent, cached)

    async def _pump(self, attempt: UpstreamAttempt, reader: ChunkReader) -> None:
        gw, client = self.gw, self.client
        feed, read_event, record = SSEDecoder().feed, reader.read, client.record
        clock, read = gw.clock, attempt.read
        while True:
            data = await read()
            now = clock()
            if not data:
                if record.finish_reason is not None:  # the engine forgot [DONE] after finishing
                    held = reader.flush()
                    await client.write(DONE_FRAME if held is None else held + DONE_FRAME)
                    return
                raise up.StreamInterrupted(attempt.backend, "stream ended before [DONE]")
            attempt.touch(now)
            out: list[bytes] = []
            tokens = 0
            done = False
            err: up.UpstreamError | None = None
            try:
                for payload in feed(data):
                    if payload == DONE:
                        held = reader.flush()  # no usage chunk came to release them
                        if held is not None:
                            out.append(held)
                        out.append(DONE_FRAME)
                        done = True
                        break
                    chunk = read_event(payload)
                    tokens += reader.tokens
                    if chunk is not None:
                        out.append(chunk)
            except SSEOverflow as exc:
                err = up.UpstreamProtocolError(attempt.backend, str(exc))
            except up.UpstreamError as exc:
                err = exc
            if tokens:
                self._tokens(now, tokens, attempt.backend)
            if out:
                if client.resp is None and not self.flight.state.started and not done:
                    client.held.extend(out)
                else:
                    await client.write(out[0] if len(out) == 1 else b"".join(out))
            if err is not None:
                raise err
            if done:
                return

    def _tokens(self, now: float, n: int, backend: str) -> None:
        """``n`` tokens of one read: one gap to the previous token, zero gaps among them."""
        state, tel = self.flight.state, self.gw.telemetry
        prev = state.last_token_at
        state.on_tokens(now, n)
        tel.tokens[backend] += n
        if self.gw.observer is not None:
            self.gw.observer.on_tokens(state.id, now, n, backend)
        gaps = self._gaps
        if gaps is None or self._gaps_backend != backend:
            gaps = self._gaps = tel.gap_histogram(backend, state.model)
            self._gaps_backend = backend
        if prev is None:
            self.gw.first_token(self.flight)
            tel.ttft_histogram(backend, state.model, True).observe(now - state.arrival)
            prompt_ids = self.client.record.prompt_token_ids
            if prompt_ids is not None and not state.prompt_tokens_exact:
                self.gw.set_prompt_ids(state, prompt_ids)
        else:
            gaps.observe(now - prev)
        if n > 1:
            gaps.observe_zeros(n - 1)

    async def _next_attempt(self, exc: up.UpstreamError) -> UpstreamAttempt | None:
        """The swap point: which attempt (if any) continues this client stream."""
        flight, gw = self.flight, self.gw
        gw.leave_attempt(flight, exc)
        if self.client.started or flight.state.started:
            if _final(exc):
                return None
            return await self.resume(exc)
        self.client.held.clear()
        if isinstance(exc, up.InStreamError) and exc.is_client_error:
            return None
        return await gw.acquire(flight)

    async def resume(self, exc: up.UpstreamError) -> UpstreamAttempt | None:
        """The token-exact continuation of this started stream on another backend, if any.

        The target is the policy's: a pending ``Move`` (migration) or ``route`` with the
        failed backend excluded (failover).  None when no exact continuation exists or no
        backend takes it; the pump then ends the stream with an error event.
        """
        flight, gw = self.flight, self.gw
        if flight.dropped is not None or flight.state.finished:
            return None
        gen = flight.gen
        chat = gen.endpoint is Endpoint.CHAT
        failover = flight.pending is None
        cont = plan(gen.body, chat, self.client.record, gen.max_tokens, replay=failover)
        if cont is None:
            return None
        reason = "failover" if flight.pending is None else flight.pending.reason
        flight.continuation = cont
        if failover:  # a policy migration began its move when the tick applied it
            flight.begin_move("failover")
        try:
            attempt = await gw.acquire(flight)
        except (ApiError, up.UpstreamRejected) as err:
            log.warning("request %s: no continuation: %s", flight.state.id, err)
            return None
        gw.telemetry.migration(reason)
        return attempt

    async def _fail(self, exc: up.UpstreamError) -> web.StreamResponse:
        client = self.client
        if isinstance(exc, up.InStreamError):
            payload = exc.payload  # the engine's own OpenAI-shaped error, unchanged
            outcome = Outcome.CLIENT_ERROR if client_fault(exc.status) else Outcome.BACKEND_FAILED
        else:
            log.warning("request %s failed mid-stream: %s", self.flight.state.id, exc)
            message = f"backend failed mid-stream: {exc.public}"
            payload = error_json(message, "upstream_error", None, exc.kind)
            timeout = isinstance(exc, up.StreamIdleTimeout | up.StreamTotalTimeout)
            outcome = Outcome.TIMED_OUT if timeout else Outcome.BACKEND_FAILED
        self.flight.outcome = outcome
        await client.write(frame(payload) + DONE_FRAME)
        return await client.end()


def _final(exc: up.UpstreamError) -> bool:
    """Failures a continuation must not paper over (the request itself is at fault)."""
    if isinstance(exc, up.InStreamError):
        return exc.is_client_error
    return isinstance(exc, up.StreamTotalTimeout)


async def serve_unary(gw: Gateway, flight: Flight) -> web.Response:
    """A non-streaming request: retried until a backend answers, body forwarded as is."""
    attempt = await gw.acquire(flight)
    while True:
        try:
            body = await attempt.read_all()
            break
        except up.UpstreamError as exc:
            gw.leave_attempt(flight, exc)
            attempt = await gw.acquire(flight)
    now = gw.clock()
    usage = _usage(body)
    tokens = _completion_tokens(usage)
    if flight.resubmitted:  # an offloaded request's answer, from the move's target
        flight.resubmitted = False
        sent = usage.get("prompt_tokens") if usage is not None else None
        if type(sent) is not int:
            sent = flight.state.prompt_tokens
        gw.telemetry.resubmission(attempt.backend, sent, cached_prompt_tokens(usage))
    if gw.observer is not None:  # the answer came whole: no token times
        gw.observer.on_answer(flight.state.id, now, tokens, attempt.backend)
    state = flight.state
    # a non-streaming answer's first token is its whole latency (stream="false")
    gw.telemetry.ttft_histogram(attempt.backend, state.model, False).observe(now - state.arrival)
    if tokens:
        state.on_tokens(now, tokens)
        gw.first_token(flight)
        gw.telemetry.tokens[attempt.backend] += tokens
    content_type = attempt.content_type
    gw.end_attempt(flight, complete=True)
    flight.outcome = Outcome.COMPLETED
    return web.Response(status=200, body=body, headers={"Content-Type": content_type})


def _usage(body: bytes) -> dict[str, Any] | None:
    try:
        usage = orjson.loads(body).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _completion_tokens(usage: dict[str, Any] | None) -> int:
    n = usage.get("completion_tokens") if usage is not None else None
    return n if type(n) is int and n > 0 else 0
