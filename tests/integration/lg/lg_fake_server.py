"""A small fake OpenAI-compatible streaming server for the load generator's tests.

It speaks just enough of vLLM's wire format: ``/v1/models``, ``/tokenize`` (a toy tokenizer:
BOS + one token per word, two for words longer than four letters), and streaming
``/v1/completions`` and ``/v1/chat/completions`` that emit exactly ``max_tokens`` tokens after
``ttft_s``, one chunk of ``per_chunk`` tokens every ``tbt_s * per_chunk``, with a running
``usage`` when asked (``continuous_usage_stats``) unless ``usage=False``.  It records request
headers and counts client disconnects, and can fail every ``fail_every``-th request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

CHAT_OVERHEAD = 3  # BOS + assistant header
PER_MESSAGE = 4  # header tokens per message


def toy_count(text: str, bos: bool = True) -> int:
    return int(bos) + sum(2 if len(w) > 4 else 1 for w in text.split())


def toy_chat_count(messages: list[dict[str, str]]) -> int:
    return CHAT_OVERHEAD + sum(PER_MESSAGE + toy_count(m["content"], False) for m in messages)


@dataclass
class FakeConfig:
    ttft_s: float = 0.02
    tbt_s: float = 0.005
    per_chunk: int = 1
    usage: bool = True
    tokenize: bool = True
    fail_every: int = 0
    model: str = "fake-model"


@dataclass
class FakeState:
    config: FakeConfig
    requests: int = 0
    disconnects: int = 0
    completed: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    watches: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def set_after(self, requests: int, event: asyncio.Event) -> None:
        """Set ``event`` once this many requests have arrived (same event loop only)."""
        self.watches.append((requests, event))


STATE = web.AppKey("state", FakeState)


async def models(request: web.Request) -> web.Response:
    model = request.app[STATE].config.model
    return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})


async def tokenize(request: web.Request) -> web.Response:
    body = await request.json()
    n = toy_chat_count(body["messages"]) if "messages" in body else toy_count(body["prompt"])
    return web.json_response({"count": n, "max_model_len": 8192, "tokens": list(range(n))})


async def generate(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    cfg = state.config
    state.requests += 1
    for count, event in state.watches:
        if state.requests >= count:
            event.set()
    state.headers.append(dict(request.headers))
    body = await request.json()
    state.bodies.append(body)
    if cfg.fail_every and state.requests % cfg.fail_every == 0:
        return web.json_response(
            {"error": {"message": "injected failure", "code": 500}}, status=500
        )
    chat = "messages" in body
    prompt_tokens = toy_chat_count(body["messages"]) if chat else toy_count(body["prompt"])
    opts = body.get("stream_options") or {}
    continuous = cfg.usage and opts.get("continuous_usage_stats")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    try:
        await _stream(resp, cfg, chat, int(body["max_tokens"]), prompt_tokens, bool(continuous))
        state.completed += 1
    except (asyncio.CancelledError, ConnectionResetError):
        state.disconnects += 1
        raise
    return resp


async def _stream(
    resp: web.StreamResponse, cfg: FakeConfig, chat: bool, n: int, prompt: int, continuous: bool
) -> None:
    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def usage(done: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    if chat:
        role: dict[str, Any] = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
        if continuous:
            role["usage"] = usage(0)
        await resp.write(event(role))
    await asyncio.sleep(cfg.ttft_s)
    done = 0
    while done < n:
        k = min(cfg.per_chunk, n - done)
        done += k
        text = " tok" * k
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if done == n else None}
        choice.update({"delta": {"content": text}} if chat else {"text": text})
        chunk: dict[str, Any] = {"choices": [choice]}
        if continuous:
            chunk["usage"] = usage(done)
        await resp.write(event(chunk))
        if done < n:
            await asyncio.sleep(cfg.tbt_s * k)
    if cfg.usage:
        await resp.write(event({"choices": [], "usage": usage(done)}))
    await resp.write(b"data: [DONE]\n\n")


def make_app(config: FakeConfig) -> web.Application:
    app = web.Application()
    app[STATE] = FakeState(config)
    app.router.add_get("/v1/models", models)
    if config.tokenize:
        app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/completions", generate)
    app.router.add_post("/v1/chat/completions", generate)
    return app


@contextlib.asynccontextmanager
async def serve(config: FakeConfig | None = None) -> AsyncIterator[tuple[str, FakeState]]:
    """Serve on 127.0.0.1, a free port; yields (base URL, state)."""
    app = make_app(config or FakeConfig())
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", app[STATE]
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serve_in_thread(config: FakeConfig | None = None) -> Iterator[tuple[str, FakeState]]:
    """The same server on its own event loop in a thread (for synchronous CLI tests)."""
    ready: list[tuple[str, FakeState]] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Future[None] = loop.create_future()

    async def main() -> None:
        async with serve(config) as info:
            ready.append(info)
            started.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()
