"""The split topology for real: emulated engines in-process, schedulers and workers as
processes (so they can be killed), all on free loopback ports.

``SplitStack`` starts nothing by itself: tests start exactly the schedulers and workers
they need (``scheduler``/``worker``), kill them with SIGKILL, and wait on conditions read
from the schedulers' ``/ready`` and the workers' private ports, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator

MODEL = "llama3-8b"
WAIT_S = 90.0  # generous: a loaded 2-core machine starts Python processes slowly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(what: str, check: Callable[[], Awaitable[bool]], limit_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int  # scheduler: its ws port; worker: its private port
    log: Path

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class SplitStack:
    tmp: Path
    redis_url: str | None
    emulators: dict[str, RunningEmulator]
    config: Path
    port: int = field(default_factory=free_port)  # the workers' shared port
    procs: list[Proc] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None
    lease_key: str = field(default_factory=lambda: f"ascendra:test:{os.getpid()}:{free_port()}")

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str], port: int) -> Proc:
        log = self.tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "ascendra_proxy.cli", *args, "--config", str(self.config)]
        with open(log, "wb") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        proc = Proc(name, popen, port, log)
        self.procs.append(proc)
        return proc

    def scheduler(self, name: str, port: int | None = None) -> Proc:
        port = port or free_port()
        args = ["scheduler", "--listen", f"ws://127.0.0.1:{port}", "--name", name]
        if self.redis_url is not None:
            args += ["--elector", "redis", "--redis", self.redis_url, "--lease-key", self.lease_key]
        return self._spawn(name, args, port)

    def worker(self, name: str, schedulers: list[Proc]) -> Proc:
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--reuse-port"]
        args += ["--private-port", str(port)]
        for s in schedulers:
            args += ["--scheduler", f"ws://127.0.0.1:{s.port}"]
        return self._spawn(name, args, port)

    async def ready(self, sched: Proc) -> dict[str, Any] | None:
        """The scheduler's /ready body when it leads, else None."""
        try:
            async with self.client.get(sched.url + "/ready") as resp:
                return await resp.json() if resp.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def leading(self, sched: Proc, workers: int) -> dict[str, Any]:
        """Wait until ``sched`` leads with ``workers`` workers connected; its /ready body."""
        body: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal body
            body = await self.ready(sched) or {}
            return len(body.get("workers", ())) == workers

        await until(f"{sched.name} leads {workers} workers", check)
        return body

    async def worker_up(self, worker: Proc) -> None:
        async def check() -> bool:
            try:
                async with self.client.get(worker.url + "/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await until(f"{worker.name} answers", check)

    async def metric(self, proc: Proc, name: str, labels: str = "") -> float:
        """One sample of a worker's or scheduler's /metrics (0 when absent)."""
        async with self.client.get(proc.url + "/metrics") as resp:
            text = await resp.text()
        key = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0

    async def dispatches(self, sched: Proc) -> list[dict[str, Any]]:
        async with self.client.get(sched.url + "/dispatches") as resp:
            return list(await resp.json())


def config(emus: dict[str, RunningEmulator], lp: list[str], hp: list[str], **extra: Any) -> dict:
    def backend(name: str) -> dict[str, Any]:
        settings = {"profile": "a100-llama3-8b", "scheduling_policy": "priority", **extra}
        return {
            "name": name,
            "url": emus[name].url,
            "engine": "vllm",
            "model": MODEL,
            "engine_settings": settings,
        }

    pools = [{"name": "lp", "role": "lp", "backends": [backend(n) for n in lp]}]
    if hp:
        pools.append({"name": "hp", "role": "hp", "backends": [backend(n) for n in hp]})
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "pools": pools,
        "slo": {"default": {"ttft_ms": 5000, "tpot_ms": 1000}},  # headers may only loosen it
        "policy": {"type": "ascendra"},
        "health": {"interval_s": 0.5, "failure_threshold": 3, "cooldown_s": 30},
        "scrape": {"interval_s": 0.1},
        "timeouts": {"first_byte_s": 120, "idle_s": 60, "total_s": 300},
    }


@contextlib.asynccontextmanager
async def split_stack(
    tmp: Path,
    redis_url: str | None,
    lp: tuple[str, ...] = ("lp-0", "lp-1"),
    hp: tuple[str, ...] = ("hp-0",),
    time_scale: float = 0.2,
    **engine: Any,
) -> AsyncIterator[SplitStack]:
    async with contextlib.AsyncExitStack() as stack:
        emus: dict[str, RunningEmulator] = {}
        for name in (*lp, *hp):
            flavor: Literal["vllm"] = "vllm"
            emu = EmulatorConfig(
                flavor=flavor,
                model=MODEL,
                time_scale=time_scale,
                seed=7,
                scheduling_policy="priority",
            )
            emus[name] = await stack.enter_async_context(run_emulator(emu))
        path = tmp / "proxy.yaml"
        path.write_text(yaml.safe_dump(config(emus, list(lp), list(hp), **engine)))
        s = SplitStack(tmp, redis_url, emus, path)
        s.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S))
        try:
            yield s
        finally:
            for proc in s.procs:
                if proc.popen.poll() is None:
                    proc.popen.terminate()
            for proc in s.procs:
                try:
                    proc.popen.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await s.http.close()


async def complete(
    s: SplitStack,
    base: str,
    max_tokens: int = 8,
    headers: dict[str, str] | None = None,
    stream: bool = True,
    seen: list[int] | None = None,
) -> tuple[int, int, str]:
    """One completion: (HTTP status, tokens received, finish reason or error); ``seen`` gets
    one entry per streamed event that carries text."""
    body = {
        "model": MODEL,
        "prompt": "the quick brown fox",
        "max_tokens": max_tokens,
        "stream": stream,
        "ignore_eos": True,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    async with s.client.post(base + "/v1/completions", json=body, headers=headers) as resp:
        if resp.status != 200:
            return resp.status, 0, await resp.text()
        if not stream:
            data = await resp.json()
            return 200, int(data["usage"]["completion_tokens"]), data["choices"][0]["finish_reason"]
        tokens, finish, done = 0, "", False
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            event = json.loads(payload)
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
            for choice in event.get("choices") or ():
                finish = choice.get("finish_reason") or finish
                if seen is not None and choice.get("text"):
                    seen.append(1)
        return 200, tokens, finish if done else "no [DONE]"
