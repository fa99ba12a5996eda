"""A scriptable vLLM/SGLang-shaped backend for proxy unit tests (in-process aiohttp server).

Each test sets ``FakeBackend.script`` (a ``Script``) to choose the behaviour: how many tokens,
how many tokens per chunk, a delay before the first token (a "prefill"), a failure status,
dying mid-stream, an in-stream error event, splitting every event across two writes.  Like
vLLM it puts ``system_fingerprint`` on the stream's last message: the usage chunk when usage
was asked for, else the terminal chunk.  The server records every request body it receives
and how many requests are running, so tests can check what the proxy sent upstream and that
aborts free the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

FINGERPRINT = "fake-fp-1"


@dataclass
class Script:
    tokens: int = 5
    per_chunk: int = 1
    first_delay_s: float = 0.0
    gap_s: float = 0.0
    status: int | None = None  # answer this status with an error body instead of streaming
    die_after: int | None = None  # close the connection after this many tokens
    error_after: int | None = None  # send an in-stream error event after this many tokens
    error_code: int = 500
    split_events: bool = False
    coalesce: int = 1  # SSE events per socket write (several events arrive in one read)
    omit_token_ids: bool = False  # behave like an engine that ignores return_token_ids
    omit_done: bool = False
    omit_usage: bool = False  # no usage chunk even when asked (an engine ignoring the option)
    die_before_usage: bool = False  # close the connection after the last token chunk
    linger_s: float = 0.0  # pause between [DONE] and the end of the HTTP body
    # usage.prompt_tokens_details.cached_tokens on the final usage (vLLM with
    # --enable-prompt-tokens-details); None: the field is absent
    cached_tokens: int | None = None
    headers_delay_s: float = 0.0  # a stream's response headers wait this long (a late engine)


@dataclass
class FakeBackend:
    name: str = "fake"
    engine: str = "vllm"
    model: str = "m"
    api_key: str | None = None  # the key the proxy must use toward this backend
    script: Script = field(default_factory=Script)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    started: int = 0
    aborted_rids: list[str] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)  # client address per connection
    cancelled: int = 0
    metrics_text: str = "vllm:num_requests_running 0\n"
    healthy: bool = True
    url: str = ""
    model_card: dict[str, Any] | None = None  # served on /v1/models when set
    tokenize_status: int = 200  # the answer of /tokenize

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/abort_request", self._abort)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/tokenize", self._tokenize)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        if self.model_card is None:
            return web.Response(status=404)
        return web.json_response({"object": "list", "data": [self.model_card]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        if self.tokenize_status != 200:
            return web.json_response({"error": "fake"}, status=self.tokenize_status)
        return web.json_response({"count": 2, "tokens": [1, 2], "backend": self.name})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics_text)

    async def _abort(self, request: web.Request) -> web.Response:
        self.aborted_rids.append((await request.json())["rid"])
        return web.json_response({})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.auth_headers.append(request.headers.get("Authorization"))
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        self.started += 1
        s = Script(**body["fake_script"]) if "fake_script" in body else self.script
        if s.status is not None:
            err = {
                "error": {
                    "message": f"fake {s.status}",
                    "type": "X",
                    "param": None,
                    "code": s.status,
                }
            }
            return web.json_response(err, status=s.status)
        chat = request.path.endswith("chat/completions")
        self.running += 1
        try:
            if not body.get("stream"):
                await asyncio.sleep(s.first_delay_s)
                return web.json_response(_unary(body, s.tokens, chat, s.cached_tokens))
            return await self._stream(request, body, chat, s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chat: bool, s: Script
    ) -> web.StreamResponse:
        await asyncio.sleep(s.headers_delay_s)
        resp = CoalescingResponse(s.coalesce, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(s.first_delay_s)
        opts = body.get("stream_options") or {}
        ids_on = body.get("return_token_ids") and not s.omit_token_ids
        usage_each = opts.get("include_usage") and opts.get("continuous_usage_stats")
        created = int(time.time())
        base = {
            "id": "cmpl-fake",
            "created": created,
            "model": body["model"],
            "object": "chat.completion.chunk" if chat else "text_completion",
        }
        if chat:
            first: dict[str, Any] = {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
            if ids_on:
                first["prompt_token_ids"] = [1, 2, 3]
            await self._send(resp, first, s)
        sent = 0
        while sent < s.tokens:
            if s.die_after is not None and sent >= s.die_after:
                assert request.transport is not None
                request.transport.close()
                return resp
            if s.error_after is not None and sent >= s.error_after:
                await self._send(
                    resp,
                    {
                        "error": {
                            "message": "engine exploded",
                            "type": "Err",
                            "param": None,
                            "code": s.error_code,
                        }
                    },
                    s,
                )
                await resp.write(b"data: [DONE]\n\n")
                return resp
            n = min(s.per_chunk, s.tokens - sent)
            ids = list(range(100 + sent, 100 + sent + n))
            sent += n
            text = "".join(f" t{i}" for i in ids)
            finish = "length" if sent >= s.tokens else None
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": text}
            else:
                choice["text"] = text
            if ids_on:
                choice["token_ids"] = ids
                if not chat and sent == n:
                    choice["prompt_token_ids"] = [1, 2, 3]
            chunk: dict[str, Any] = {**base, "choices": [choice]}
            if usage_each:
                chunk["usage"] = _usage(sent)
            if finish is not None and not opts.get("include_usage"):
                chunk["system_fingerprint"] = FINGERPRINT  # vLLM: on the last message
            await self._send(resp, chunk, s)
            if s.gap_s:
                await asyncio.sleep(s.gap_s)
        if s.die_before_usage:
            assert request.transport is not None
            request.transport.close()
            return resp
        if opts.get("include_usage") and not s.omit_usage:
            usage = _usage(sent, s.cached_tokens)
            last = {**base, "choices": [], "usage": usage, "system_fingerprint": FINGERPRINT}
            await self._send(resp, last, s)
        if not s.omit_done:
            await resp.write(b"data: [DONE]\n\n")
        await asyncio.sleep(s.linger_s)
        return resp

    async def _send(self, resp: web.StreamResponse, obj: dict[str, Any], s: Script) -> None:
        data = b"data: " + orjson.dumps(obj) + b"\n\n"
        if s.split_events:
            mid = len(data) // 2
            await resp.write(data[:mid])
            await asyncio.sleep(0.001)
            data = data[mid:]
        await resp.write(data)


class CoalescingResponse(web.StreamResponse):
    """Writes ``events`` SSE events at a time (the last ones at the end of the body), so
    that the proxy reads several events, and tokens, in one socket read."""

    def __init__(self, events: int, **kw: Any) -> None:
        super().__init__(**kw)
        self._events = events
        self._pending: list[bytes] = []

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._events <= 1:
            await super().write(data)
            return
        self._pending.append(bytes(data))
        if sum(p.count(b"\n\n") for p in self._pending) >= self._events:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            await super().write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        await self._flush()
        await super().write_eof(data)


def _usage(n: int, cached: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _unary(body: dict[str, Any], n: int, chat: bool, cached: int | None = None) -> dict[str, Any]:
    text = "".join(f" t{100 + i}" for i in range(n))
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [choice],
        "usage": _usage(n, cached),
    }


@contextlib.asynccontextmanager
async def serve_fake(fake: FakeBackend) -> AsyncIterator[FakeBackend]:
    runner = web.AppRunner(fake.app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
