"""What both wire flavours share: admitting a request, pumping its stream, handling hang-ups.

Theory of operation: a flavour's handler parses its body into :class:`GenParams` and calls
:meth:`ServerContext.start`, which applies the injected error rate, checks the context length,
creates the :class:`RequestStream` and submits the engine request to the step loop.  The
handler then either streams (:func:`pump_sse`: each delta rendered and written to the socket
from the step loop, one HTTP chunk per step) or collects (:func:`collect`) the deltas.

Client hang-ups: the app runs with ``handler_cancellation=True``, so aiohttp cancels the
handler task as soon as the connection drops, also while the prompt is still prefilling and
nothing is being written.  The ``except CancelledError`` paths call
:meth:`ServerContext.client_gone`, which aborts the engine request at once (vLLM) or after
``abort_delay_s`` (SGLang's background abort task).  A crash fault makes ``next_batch`` raise
:class:`Crashed`; the pump then writes half an event and drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from ascendra_proxy.emulator.detok import PieceTable, StreamDecoder
from ascendra_proxy.emulator.errors import APIError, ConnectionDropped
from ascendra_proxy.emulator.faults import FaultInjector
from ascendra_proxy.emulator.metrics import ServerMetrics
from ascendra_proxy.emulator.params import GenParams
from ascendra_proxy.emulator.runner import StepLoop
from ascendra_proxy.emulator.stream import Crashed, Delta, RequestStream, StopStrings
from ascendra_proxy.engine.tokenizer import Tokenizer
from ascendra_proxy.engine.types import EngineRequest, SamplingSpec

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
CRASH_FRAGMENT = b'data: {"id":"'


@dataclass(slots=True)
class ServerContext:
    """Everything a handler needs; one per app, stored under a typed app key."""

    model: str
    max_model_len: int
    tokenizer: Tokenizer
    pieces: PieceTable
    loop: StepLoop
    metrics: ServerMetrics
    faults: FaultInjector
    frontend_delay_s: float = 0.0
    abort_delay_s: float = 0.0
    created: int = 0  # unix time the server started (model card ``created``)
    fingerprint: str = ""
    prompt_tokens_details: bool = True
    priority_enabled: bool = False

    @staticmethod
    def created_now() -> int:
        return int(time.time())

    def check_error_fault(self) -> None:
        if self.faults.draw_error():
            status = self.faults.config.error_status
            raise APIError("Injected fault: the engine failed this request.", status)

    async def start(self, public_id: str, params: GenParams) -> RequestStream:
        """Admit a validated request into the engine; its stream starts empty."""
        self.check_error_fault()
        if self.frontend_delay_s > 0:
            await asyncio.sleep(self.frontend_delay_s)
        loop = self.loop
        engine_id = loop.new_engine_id(public_id)
        stream = RequestStream(
            engine_id,
            len(params.prompt_ids),
            StreamDecoder(self.pieces),
            StopStrings(params.stop, params.include_stop_str_in_output),
            params.min_tokens,
            arrival=asyncio.get_running_loop().time(),
            on_token_times=self.metrics.on_tokens,
        )
        sampling = SamplingSpec(
            max_tokens=params.max_tokens,
            min_tokens=params.min_tokens,
            ignore_eos=params.ignore_eos,
            stop_token_ids=params.stop_token_ids,
            seed=params.seed,
        )
        request = EngineRequest(
            engine_id, params.prompt_ids, sampling, loop.model_now(), params.priority
        )
        try:
            loop.submit(request, stream)
        except ValueError as exc:  # the engine refused it (e.g. an impossible request)
            raise APIError(str(exc), 400) from None
        return stream

    def client_gone(self, stream: RequestStream) -> None:
        """The client hung up before the stream ended: abort (now or after the delay)."""
        if stream.done:
            return
        self.metrics.on_aborted(stream)
        if self.abort_delay_s <= 0:
            self.loop.abort(stream)
        else:
            asyncio.get_running_loop().call_later(self.abort_delay_s, self.loop.abort, stream)

    def check_token_ids(self, ids: list[int]) -> None:
        vocab = self.tokenizer.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise APIError(f"Token id {max(bad)} is out of vocabulary", 400)


CTX = web.AppKey("emulator_ctx", ServerContext)


async def pump_sse(
    request: web.Request,
    ctx: ServerContext,
    stream: RequestStream,
    render: Callable[[list[Delta]], bytes],
    tail: Callable[[], bytes],
) -> web.StreamResponse:
    """Stream ``stream`` as SSE: ``render`` every delta, then ``tail`` at the end.

    After the headers, each delta's chunk is written straight to the transport as one HTTP/1.1
    chunk from the step loop (see :meth:`RequestStream.attach`); aiohttp writes the tail and
    the terminating chunk.  HTTP/1.0 clients get the queued path (no chunked encoding there).
    """
    resp = web.StreamResponse(headers=SSE_HEADERS)
    direct = request.version >= (1, 1)
    if direct:
        resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        if direct and request.transport is not None:
            stream.attach(_chunk_writer(request.transport, render))
            await stream.wait_end()
            await resp.write(tail())
        else:
            await _queued_pump(resp, stream, render, tail)
        await resp.write_eof()
    except Crashed:
        await _crash_connection(request, resp)
    except ConnectionError:  # the client went away between two writes
        ctx.client_gone(stream)
    except asyncio.CancelledError:  # the client went away (handler_cancellation)
        ctx.client_gone(stream)
        raise
    return resp


def _chunk_writer(
    base: asyncio.BaseTransport, render: Callable[[list[Delta]], bytes]
) -> Callable[[Delta], None]:
    transport = cast(asyncio.WriteTransport, base)  # uvloop's transports are not subclasses

    def write(delta: Delta) -> None:
        if transport.is_closing():
            return
        data = render([delta])
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    return write


async def _queued_pump(
    resp: web.StreamResponse,
    stream: RequestStream,
    render: Callable[[list[Delta]], bytes],
    tail: Callable[[], bytes],
) -> None:
    while True:
        batch = await stream.next_batch()
        data = render(batch)
        if batch[-1].finish_reason is not None:
            await resp.write(data + tail())
            return
        await resp.write(data)


async def collect(request: web.Request, ctx: ServerContext, stream: RequestStream) -> list[Delta]:
    """Every delta of a non-streaming request (the request is aborted if the client leaves)."""
    deltas: list[Delta] = []
    try:
        while True:
            batch = await stream.next_batch()
            deltas.extend(batch)
            if batch[-1].finish_reason is not None:
                return deltas
    except Crashed:
        await _crash_connection(request, None)
        raise ConnectionDropped from None
    except asyncio.CancelledError:
        ctx.client_gone(stream)
        raise


async def _crash_connection(request: web.Request, resp: web.StreamResponse | None) -> None:
    """Half an SSE event (if streaming), then drop the connection."""
    if resp is not None and resp.prepared:
        with contextlib.suppress(ConnectionError):
            await resp.write(CRASH_FRAGMENT)
    transport = request.transport
    if transport is not None:
        transport.close()
