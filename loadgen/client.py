"""Streaming client for any OpenAI-compatible server (vLLM, SGLang, the proxy, the emulator).

Theory of operation: :class:`Target` names the server (base URL with any ``/v1`` suffix
removed, model, endpoint).  Request bodies are encoded once, before the run, by
:func:`encode_body`: ``stream: true``, ``stream_options: {include_usage, continuous_usage_stats}``
(so tokens are counted exactly from the running ``usage``, see :mod:`loadgen.sse`), output
length pinned by ``max_tokens`` = ``min_tokens`` with ``ignore_eos``.  SLOs travel as
``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` headers, or (``--slo-headers class``) as the class
name in ``x-slo-class``.

:func:`stream_request` sends one request and fills a :class:`RequestRecord` as bytes arrive:
every network read that completes events carrying tokens becomes one chunk, timestamped with
``time.perf_counter()`` relative to the run's start.  It never raises for server or network
trouble (the outcome says ``failed`` with the reason); on cancellation (the run is stopping)
it leaves the outcome ``unfinished`` and re-raises.  A request with ``disconnect_after_s``
closes its connection that long after being sent, unless it finished first (``disconnected``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from loadgen.metrics import Outcome, RequestRecord
from loadgen.prompts import Prompt
from loadgen.sse import StreamCounter
from loadgen.workloads import WorkItem

__all__ = [
    "SLO_HEADER_MODES",
    "ClientStats",
    "Target",
    "base_url",
    "discover_model",
    "encode_body",
    "make_session",
    "slo_headers",
    "stream_request",
]

log = logging.getLogger("loadgen")

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def base_url(url: str) -> str:
    """The server root: ``http://h:8000/v1/`` and ``http://h:8000`` both give ``http://h:8000``."""
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    if not root.startswith(("http://", "https://")):
        raise ValueError(f"--url must start with http:// or https://, got {url!r}")
    return root


@dataclass(frozen=True, slots=True)
class Target:
    root: str  # no trailing slash, no /v1
    model: str
    endpoint: str = "completions"  # or "chat"
    api_key: str | None = None

    @property
    def url(self) -> str:
        return self.root + ENDPOINTS[self.endpoint]

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h


@dataclass(slots=True)
class ClientStats:
    """Shared per run: things worth one warning, not one per request."""

    fallback_counting: int = 0
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning(message)


def make_session(limit: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def discover_model(session: aiohttp.ClientSession, root: str, api_key: str | None) -> str:
    """The first model ``GET /v1/models`` lists."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with session.get(root + "/v1/models", headers=headers) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {root}/v1/models: HTTP {resp.status}: {raw[:200]!r}")
    data = orjson.loads(raw).get("data") or []
    if not data:
        raise RuntimeError(f"GET {root}/v1/models lists no model; pass --model")
    return str(data[0]["id"])


SLO_HEADER_MODES = ("numbers", "class")


def slo_headers(item: WorkItem, mode: str = "numbers") -> dict[str, str]:
    """``numbers``: the request's SLO as ``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` (any proxy
    honours them); ``class``: its class name as ``x-slo-class`` only (the proxy's
    ``slo.classes`` must define it, else it answers 400)."""
    if mode == "class":
        return {"x-slo-class": item.slo_class}
    return {
        "x-slo-ttft-ms": _ms(item.slo_ttft_s),
        "x-slo-tpot-ms": _ms(item.slo_tbt_s),
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.6g}"


def encode_body(target: Target, prompt: Prompt, item: WorkItem) -> bytes:
    body: dict[str, Any] = {
        "model": target.model,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "max_tokens": item.output_tokens,
        "min_tokens": item.output_tokens,
        "ignore_eos": True,
    }
    if target.endpoint == "chat":
        body["messages"] = prompt.messages
        body["max_completion_tokens"] = item.output_tokens
    else:
        body["prompt"] = prompt.token_ids if prompt.token_ids is not None else prompt.text
    return orjson.dumps(body)


async def stream_request(
    session: aiohttp.ClientSession,
    target: Target,
    body: bytes,
    headers: dict[str, str],
    record: RequestRecord,
    t0: float,
    *,
    disconnect_after_s: float | None = None,
    timeout_s: float = 600.0,
    stats: ClientStats | None = None,
) -> None:
    """Send one request and record its stream (see the module docstring)."""
    clock = time.perf_counter
    record.sent_s = clock() - t0
    leave_at = timeout_s if disconnect_after_s is None else min(timeout_s, disconnect_after_s)
    counter = StreamCounter()
    try:
        async with asyncio.timeout(leave_at):
            await _exchange(session, target, body, headers, record, counter, t0)
    except TimeoutError:
        record.end_s = clock() - t0
        if disconnect_after_s is not None and disconnect_after_s <= timeout_s:
            record.outcome = Outcome.DISCONNECTED
        else:
            _fail(record, f"timeout after {timeout_s:g} s")
    except (aiohttp.ClientError, ConnectionError, OSError) as exc:
        record.end_s = clock() - t0
        _fail(record, f"{type(exc).__name__}: {exc}")
    record.prompt_tokens_reported = counter.prompt_tokens
    if stats is not None and counter.fallback:
        stats.fallback_counting += 1
        stats.warn_once(
            "fallback",
            "the server sent no running usage and no token_ids: counting one token per "
            "non-empty chunk (inexact; run vLLM/SGLang for exact token timing)",
        )


async def _exchange(
    session: aiohttp.ClientSession,
    target: Target,
    body: bytes,
    headers: dict[str, str],
    record: RequestRecord,
    counter: StreamCounter,
    t0: float,
) -> None:
    clock = time.perf_counter
    async with session.post(target.url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raw = await resp.read()
            record.end_s = clock() - t0
            _fail(record, f"HTTP {resp.status}: {_error_text(raw)}")
            return
        feed, add = counter.feed, record.add_chunk
        async for data in resp.content.iter_any():
            now = clock() - t0  # stamp the read before parsing it
            n = feed(data)
            if n:
                add(now, n)
            if counter.done:
                break
        record.end_s = clock() - t0
    if counter.error is not None:
        _fail(record, counter.error)
    elif not counter.done:
        _fail(record, "stream ended without [DONE]")
    else:
        record.outcome = Outcome.COMPLETED


def _fail(record: RequestRecord, reason: str) -> None:
    record.outcome = Outcome.FAILED
    record.error = reason[:500]


def _error_text(raw: bytes) -> str:
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return str(doc["error"].get("message", doc["error"]))
    except orjson.JSONDecodeError:
        pass
    return raw[:300].decode("utf-8", errors="replace")
