"""The proxy in-process in front of real vLLM servers, and streams read through the openai SDK.

Theory of operation
-------------------
``running_proxy`` serves a proxy config (a plain mapping, parsed by the product's own
``parse_config``) on a free loopback port of the test's event loop and hands back an
``openai.AsyncOpenAI`` client pointed at it, a plain ``httpx`` client for ``/metrics`` and
the live ``Gateway``.  ``backend`` turns a started :class:`VllmServer` into a backend entry
that tells the proxy the engine's real shape (sequence limit, block size, scheduling policy,
context length), so the proxy's policies see what the engine does.

``read_stream`` drains an SDK stream (completions or chat) into a :class:`StreamRead`: the
text, the token ids the client was shown (when it asked for them), usage chunks, the role
chunks, and every JSON key path the client received (``keys``), so a test can compare what
the proxy streamed with what the engine streams to a client talking to it directly.
Tokens are counted from token ids and usage, never from chunks: a busy vLLM coalesces
several tokens into one chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from aiohttp import web
from vllm_harness import Json, Metrics, VllmServer, scrape

from ascendra_proxy.config import parse_config
from ascendra_proxy.proxy.app import start_server
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.keys import GATEWAY

CLIENT_KEY = "realvllm-client-key"
ADMIN_KEY = "realvllm-admin-key"


def backend(server: VllmServer, name: str) -> Json:
    """A backend entry for ``server`` with the engine's real shape."""
    opts = server.options
    return {
        "name": name,
        "url": server.base_url,
        "engine": "vllm",
        "model": server.model,
        "engine_settings": {
            "max_num_seqs": opts.max_num_seqs,
            "block_size": opts.block_size,
            "scheduling_policy": opts.policy,
            "max_model_len": opts.max_model_len,
        },
    }


def proxy_config(pools: list[Json], policy: Json, **overrides: Any) -> Json:
    data: Json = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "pools": pools,
        "policy": policy,
        "auth": {"api_keys": [CLIENT_KEY], "admin_key": ADMIN_KEY},
        "health": {"interval_s": 1.0, "timeout_s": 10.0, "failure_threshold": 5},
        "scrape": {"interval_s": 0.1, "timeout_s": 5.0},
        "timeouts": {"first_byte_s": 120, "idle_s": 60, "total_s": 300},
    }
    data.update(overrides)
    return data


@dataclass
class Proxy:
    url: str
    runner: web.AppRunner
    client: openai.AsyncOpenAI
    http: httpx.AsyncClient

    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY]

    async def metrics(self) -> Metrics:
        return await scrape(self.http, self.url)


@contextlib.asynccontextmanager
async def running_proxy(cfg: Json) -> AsyncIterator[Proxy]:
    async with contextlib.AsyncExitStack() as stack:
        runner, addrs = await start_server(parse_config(cfg), "127.0.0.1", 0, shutdown_grace_s=1)
        stack.push_async_callback(runner.cleanup)
        url = f"http://{addrs[0][0]}:{addrs[0][1]}"
        client = openai.AsyncOpenAI(
            base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=120
        )
        stack.push_async_callback(client.close)
        # scrapes wait as long as a test's polls do: a real vLLM generating for a client that
        # does not read starved the test process for a minute on a loaded 2-core machine
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=120))
        yield Proxy(url, runner, client, http)


def direct_client(server: VllmServer) -> openai.AsyncOpenAI:
    """An SDK client talking to the engine itself (the reference for what the proxy sends)."""
    return openai.AsyncOpenAI(
        base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120
    )


# ---------------------------------------------------------------- reading SDK streams


@dataclass
class StreamRead:
    """What one client saw on one stream."""

    chunk_ids: set[str] = field(default_factory=set)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    usages: list[Json] = field(default_factory=list)
    usage_last: bool = False  # the (only) usage chunk came last, with no choices
    roles: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # every JSON key path received
    chunks: int = 0
    fingerprints: list[tuple[int, str]] = field(default_factory=list)  # (chunk index, value)

    @property
    def usage(self) -> Json | None:
        return self.usages[-1] if self.usages else None

    @property
    def fingerprint_places(self) -> list[tuple[int, str]]:
        """``system_fingerprint`` values by place counted from the end (0: last chunk)."""
        return [(self.chunks - 1 - i, v) for i, v in self.fingerprints]


def key_paths(obj: Any, prefix: str = "") -> set[str]:
    """Key paths of a JSON value (list items share ``[]``), e.g. ``choices[].delta.content``;
    keys whose value is null are left out (vLLM sends some extras as null when not asked)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if v is None:
                continue
            path = f"{prefix}.{k}" if prefix else k
            out.add(path)
            out |= key_paths(v, path)
    elif isinstance(obj, list):
        for v in obj:
            out |= key_paths(v, prefix + "[]")
    return out


def _take_choice(read: StreamRead, choice: Json) -> None:
    delta = choice.get("delta")
    if isinstance(delta, dict):  # chat
        read.text += delta.get("content") or ""
        if delta.get("role"):
            read.roles.append(delta["role"])
    else:
        read.text += choice.get("text") or ""
    read.token_ids += choice.get("token_ids") or []
    if choice.get("finish_reason"):
        read.finish_reasons.append(choice["finish_reason"])


async def read_stream(
    stream: Any,
    stop_after_chunks: int | None = None,
    stop_after_tokens: int | None = None,
    into: StreamRead | None = None,
) -> StreamRead:
    """Drain an SDK stream (completions or chat); stop early after ``stop_after_chunks``
    chunks that carry text, or once ``stop_after_tokens`` token ids were read (then the
    caller closes the stream, or reads on with ``into`` the ``StreamRead`` so far)."""
    read = StreamRead() if into is None else into
    texty = 0
    async for chunk in stream:
        data = chunk.to_dict()
        read.chunks += 1
        read.chunk_ids.add(data["id"])
        read.keys |= key_paths(data)
        if data.get("system_fingerprint") is not None:
            read.fingerprints.append((read.chunks - 1, data["system_fingerprint"]))
        read.usage_last = False
        if data.get("usage"):
            read.usages.append(data["usage"])
            read.usage_last = not data["choices"]
        before = len(read.text)
        for choice in data["choices"]:
            _take_choice(read, choice)
        texty += len(read.text) > before
        if stop_after_chunks is not None and texty >= stop_after_chunks:
            break
        if stop_after_tokens is not None and len(read.token_ids) >= stop_after_tokens:
            break
    return read
