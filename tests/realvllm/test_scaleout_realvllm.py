"""``ascendra-proxy serve --workers 2`` in front of a real vLLM, driven by the openai SDK.

The supervisor runs as a subprocess (its own process group, config in a temp file, a free
shared port, each worker's private port for its own ``/metrics``), in front of the suite's
``real_vllm``.  Pinned here:

- **answers are the engine's**: with greedy sampling every answer through the two workers
  (completions and chat, streamed and not) equals vLLM's direct answer to the same request,
  text and usage;
- **both workers serve**: each request opens a fresh connection, so the kernel's
  ``SO_REUSEPORT`` hash spreads them; requests continue (cheap ones, each still checked
  against the direct answer) until both workers' ``ascendra_requests_total`` counted one,
  with a bound far past any plausible run of one-sided hashes (2^-40);
- **the scheduler decides**: requests are sent once both workers logged the scheduler's
  welcome, and each worker held every request it served for the scheduler's decision
  (``ascendra_decisions_total{reason="scheduler_wait"}``), none routed by fail-open;
- **nothing is left in flight**: at the end both workers' in-flight and queued gauges are 0,
  their completed counts add up to the requests sent, and vLLM runs nothing.

Every wait is on a condition with a generous bound; nothing depends on speed.  The
supervisor is stopped with SIGTERM (workers finish, then the scheduler) and, should that
not end it, its whole process group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam
from proxy_helpers import CLIENT_KEY, backend, direct_client, proxy_config, read_stream
from vllm_harness import Json, VllmServer, metric, scrape, wait_metric

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(900)]

WORKERS = 2
WAIT_S = 180.0  # process starts and first answers on a loaded 2-core machine
SPREAD_LIMIT = 40  # fresh connections before "never reached a worker" is a failure
MAX_TOKENS = 12
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about queues."}]
GREEDY: Json = {"temperature": 0.0}
LEADS = re.compile(r"worker \S+: scheduler \S+ leads")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A base port ``p`` with ``p`` and ``p + 1`` both free (the workers' private ports)."""
    for _ in range(100):
        base = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two adjacent free ports")


async def until(what: str, check: Callable[[], Awaitable[bool]], limit_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for: {what}")
        await asyncio.sleep(0.2)


@dataclass
class Workers:
    url: str  # the shared port
    private: list[str]  # each worker's own port
    http: httpx.AsyncClient
    log: Path

    def client(self) -> openai.AsyncOpenAI:
        """A client with its own connection pool: its first request is a new connection."""
        return openai.AsyncOpenAI(
            base_url=self.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=180
        )

    async def sample(self, worker: str, name: str, **labels: str) -> float:
        return metric(await scrape(self.http, worker), name, **labels)

    async def served(self, model: str) -> list[float]:
        """Requests each worker ended as completed."""
        name = "ascendra_requests_total"
        return [await self.sample(w, name, model=model, outcome="completed") for w in self.private]

    async def led(self) -> bool:
        """Every worker logged that a scheduler leads it (the worker's INFO line on welcome)."""
        return len(LEADS.findall(self.log.read_text(errors="replace"))) >= WORKERS

    async def ready(self, worker: str) -> bool:
        try:
            resp = await self.http.get(worker + "/ready")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a process group of its own (so its children can be killed too)."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM the supervisor (it stops its children); kill the whole group if it lingers."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(90)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)  # stragglers, or the supervisor itself
    popen.wait(30)


@contextlib.asynccontextmanager
async def serve_workers(tmp: Path, cfg: Json) -> AsyncIterator[Workers]:
    path = tmp / "proxy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port, private = free_port(), free_port_pair()
    cmd = [sys.executable, "-m", "ascendra_proxy.cli", "serve", "--config", str(path)]
    cmd += ["--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--worker-port-base", str(private)]
    log = tmp / "supervisor.log"
    popen = spawn(cmd, log)
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            urls = [f"http://127.0.0.1:{private + i}" for i in range(WORKERS)]
            workers = Workers(f"http://127.0.0.1:{port}", urls, http, log)
            for url in urls:  # both listen (and see a healthy backend) before any request
                await until(f"worker {url} ready; log {log}", lambda u=url: workers.ready(u))
            # and both hear the scheduler, so it decides every request (no fail-open)
            await until(f"{WORKERS} workers welcomed by the scheduler; log {log}", workers.led)
            yield workers
    finally:
        stop_group(popen)


async def completion_pair(ours: openai.AsyncOpenAI, direct: openai.AsyncOpenAI, **ask: Any) -> None:
    got = await ours.completions.create(**ask, **GREEDY)
    want = await direct.completions.create(**ask, **GREEDY)
    assert got.choices[0].text == want.choices[0].text
    assert got.usage == want.usage


async def chat_pair(ours: openai.AsyncOpenAI, direct: openai.AsyncOpenAI, **ask: Any) -> None:
    got = await ours.chat.completions.create(**ask, **GREEDY)
    want = await direct.chat.completions.create(**ask, **GREEDY)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage == want.usage


async def stream_pair(ours: openai.AsyncOpenAI, direct: openai.AsyncOpenAI, chat: bool) -> None:
    async def read(client: openai.AsyncOpenAI) -> tuple[str, Json | None]:
        opts: Json = {"stream": True, "stream_options": {"include_usage": True}}
        if chat:
            stream = await client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS, **opts, **GREEDY
            )
        else:
            stream = await client.completions.create(
                model="tiny", prompt="The proxy streams", max_tokens=MAX_TOKENS, **opts, **GREEDY
            )
        got = await read_stream(stream)
        return got.text, got.usage

    assert await read(ours) == await read(direct)


async def ask_fresh(workers: Workers, direct: openai.AsyncOpenAI, kind: str, n: int) -> None:
    """One request of ``kind`` on a new connection, checked against vLLM's direct answer."""
    async with workers.client() as ours:
        if kind == "completion":
            await completion_pair(ours, direct, model="tiny", prompt=f"Count {n}:", max_tokens=4)
        elif kind == "completion-long":
            prompt = "The proxy relays every token"
            await completion_pair(ours, direct, model="tiny", prompt=prompt, max_tokens=MAX_TOKENS)
        elif kind == "chat":
            await chat_pair(ours, direct, model="tiny", messages=MESSAGES, max_tokens=MAX_TOKENS)
        else:
            await stream_pair(ours, direct, chat=kind == "chat-stream")


async def test_two_workers_serve_vllm_answers_and_end_every_request(
    real_vllm: VllmServer, tmp_path: Path
) -> None:
    assert real_vllm.model == "tiny"
    pool = {"name": "main", "role": "mixed", "backends": [backend(real_vllm, "vllm-a")]}
    cfg = proxy_config([pool], {"type": "round_robin"})
    async with serve_workers(tmp_path, cfg) as workers, direct_client(real_vllm) as direct:
        sent = 0
        for kind in ("completion-long", "completion-stream", "chat", "chat-stream"):
            await ask_fresh(workers, direct, kind, sent)
            sent += 1
        while min(await workers.served("tiny")) == 0:
            assert sent < SPREAD_LIMIT, (
                f"all requests reached one worker: {await workers.served('tiny')}"
            )
            await ask_fresh(workers, direct, "completion", sent)
            sent += 1

        async def all_ended() -> bool:
            idle = [
                await workers.sample(w, gauge)
                for w in workers.private
                for gauge in ("ascendra_proxy_inflight_requests", "ascendra_proxy_queued_requests")
            ]
            return sum(await workers.served("tiny")) == sent and not any(idle)

        await until(f"{sent} requests completed and none in flight", all_ended)
        served = await workers.served("tiny")
        assert all(n > 0 for n in served), served
        held = [
            await workers.sample(w, "ascendra_decisions_total", reason="scheduler_wait")
            for w in workers.private
        ]
        assert all(h >= n for h, n in zip(held, served, strict=True)), (held, served)
        for w in workers.private:  # every request ended as completed, none otherwise
            ended = metric(await scrape(workers.http, w), "ascendra_requests_total")
            assert ended == await workers.sample(
                w, "ascendra_requests_total", outcome="completed"
            ), w
        running = "vllm:num_requests_running"
        await wait_metric(workers.http, real_vllm.base_url, running, lambda v: v == 0)
