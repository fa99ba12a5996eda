"""Harness for tests against a real vLLM (and the emulator standing in for it).

Theory of operation
-------------------
``scripts/engines.sh`` owns installing, starting and stopping vLLM; :class:`VllmLauncher`
only drives it. It starts named instances on free loopback ports and stops every one it
started on ``close``. Names carry the pytest process id, so several test runs on one machine
never share or stop each other's servers. A :class:`Target` is whatever vLLM-compatible
server a test talks to (real or emulated); the wire helpers below (``sse``, ``scrape``,
``metric``, ``wait_metric``) work on either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
ENGINES_SH = REPO / "scripts" / "engines.sh"
MODEL_NAME = "tiny"
REQUIRE_ENV = "ASCENDRA_REQUIRE_REAL_VLLM"
START_TIMEOUT_S = 420

Json = dict[str, Any]
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


LONG_TOKENS = 15000  # max_tokens of a request that outlives any test: over a minute of decoding


@dataclass(frozen=True)
class VllmOptions:
    """How to start one instance; maps onto ``engines.sh start`` flags."""

    policy: str = "priority"
    max_num_seqs: int = 4
    kv_bytes: int = 256 * 1024 * 1024
    cpus: str = "0"
    block_size: int = 32  # engines.sh always passes --block-size 32
    # Long enough that a request of LONG_TOKENS outlives any test even on a quiet machine
    # (the tiny model decodes ~200 tokens/s alone: 3,000 tokens were over before a test had
    # filled the engine); the model itself has 32,768 positions.
    max_model_len: int = 16384
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class VllmServer:
    """A running real vLLM: where it is and how it was started."""

    name: str
    base_url: str
    model: str
    options: VllmOptions
    log_path: Path


@dataclass(frozen=True)
class Target:
    """A vLLM-compatible server under test: the real one or the emulator."""

    kind: str  # "real" | "emulator"
    base_url: str
    model: str
    max_num_seqs: int
    block_size: int


def engines_dir() -> Path:
    default = Path.home() / ".cache" / "ascendra-proxy" / "engines"
    return Path(os.environ.get("ASCENDRA_ENGINES_DIR", default))


def engines(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENGINES_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def require_installed() -> None:
    """Skip (or fail, under ``ASCENDRA_REQUIRE_REAL_VLLM=1``) when vLLM is not installed."""
    if engines("status", timeout=30).returncode == 0:
        return
    reason = (
        "real vLLM is not installed (run `make engines`, i.e. scripts/engines.sh install); "
        f"engines dir {engines_dir()}"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class VllmLauncher:
    """Starts named vLLM instances through ``engines.sh`` and stops them on ``close``."""

    prefix: str
    started: dict[str, VllmServer] = field(default_factory=dict)

    def start(self, label: str, options: VllmOptions) -> VllmServer:
        name = f"{self.prefix}-{label}"
        if name in self.started:
            return self.started[name]
        args = [
            "start",
            "--name",
            name,
            "--port",
            "0",
            "--policy",
            options.policy,
            "--kv-bytes",
            str(options.kv_bytes),
            "--cpus",
            options.cpus,
            "--max-num-seqs",
            str(options.max_num_seqs),
            "--max-model-len",
            str(options.max_model_len),
            "--timeout",
            str(START_TIMEOUT_S),
        ]
        if options.extra_args:
            args += ["--", *options.extra_args]
        proc = engines(*args, timeout=START_TIMEOUT_S + 60)
        if proc.returncode != 0:
            engines("stop", "--name", name, timeout=60)
            pytest.fail(f"real vLLM {name!r} did not start:\n{proc.stderr[-3000:]}", pytrace=False)
        url = proc.stdout.strip().splitlines()[-1]
        log_path = engines_dir() / "run" / f"{name}.log"
        server = VllmServer(name, url, MODEL_NAME, options, log_path)
        self.started[name] = server
        return server

    def stop(self, server: VllmServer) -> None:
        engines("stop", "--name", server.name, timeout=90)
        self.started.pop(server.name, None)

    def close(self) -> None:
        for server in list(self.started.values()):
            self.stop(server)


def real_target(server: VllmServer) -> Target:
    opts = server.options
    return Target("real", server.base_url, server.model, opts.max_num_seqs, opts.block_size)


@contextlib.asynccontextmanager
async def emulated_target(options: VllmOptions) -> AsyncIterator[Target]:
    """The in-process emulator (vLLM flavour, ``cpu-tiny`` profile) configured like a real
    instance started with ``options``."""
    from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator

    cfg = EmulatorConfig(
        flavor="vllm",
        profile="cpu-tiny",
        model=MODEL_NAME,
        scheduling_policy="priority" if options.policy == "priority" else "fcfs",
        max_num_seqs=options.max_num_seqs,
        block_size=options.block_size,
        max_model_len=options.max_model_len,
    )
    async with run_emulator(cfg) as emu:
        yield Target("emulator", emu.url, MODEL_NAME, options.max_num_seqs, options.block_size)


# ---------------------------------------------------------------- wire helpers


async def sse(client: httpx.AsyncClient, url: str, payload: Json) -> list[Json]:
    """POST a streaming request; return its JSON events, checking the ``[DONE]`` ending."""
    events: list[Json] = []
    done = False
    async with client.stream("POST", url, json=payload | {"stream": True}) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            assert not done, "data after [DONE]"
            if line == "data: [DONE]":
                done = True
            else:
                events.append(orjson.loads(line[6:]))
    assert done, "stream ended without [DONE]"
    return events


async def scrape(client: httpx.AsyncClient, base_url: str) -> Metrics:
    """Every sample of ``/metrics``, keyed by (sample name, label set).

    A pooled keep-alive connection that the server closes just as the GET goes out fails
    with "server disconnected" (uvicorn drops idle connections after 5 s); the GET is
    idempotent, so it is sent again on a fresh connection, at most twice."""
    for attempt in range(3):
        try:
            resp = await client.get(base_url + "/metrics")
            break
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if attempt == 2:
                raise
    assert resp.status_code == 200
    out: Metrics = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in metrics.items() if n == name and want <= lab)


async def wait_metric(
    client: httpx.AsyncClient,
    base_url: str,
    name: str,
    ok: Callable[[float], bool],
    within_s: float = 120.0,
) -> float:
    """Poll ``/metrics`` until ``ok(value of name)``; fail after ``within_s`` seconds.

    vLLM's gauges change only when its engine steps, so on a starved CPU they lag by seconds
    (seen: 0.8 tokens/s at a load average of 50); tests must not assert on how fast a gauge
    moves, only on what it reaches and on token counts.  A scrape that times out is no
    observation, not a failure: a busy vLLM (its engine core busy-polls a core of its own)
    starved the test process for a minute, and a connect then took over 30 s."""
    deadline = time.monotonic() + within_s
    value: float | None = None
    seen: Metrics = {}
    late: list[str] = []
    while True:
        try:
            seen = await scrape(client, base_url)
        except httpx.TimeoutException as exc:
            late.append(type(exc).__name__)
        else:
            value = metric(seen, name)
            if ok(value):
                return value
        if time.monotonic() > deadline:
            state = {n: metric(seen, n) for n in ENGINE_STATE}
            raise AssertionError(
                f"{name} = {value} after {within_s} s; engine: {state}; scrapes timed out: {late}"
            )
        await asyncio.sleep(0.05)


ENGINE_STATE = (  # printed when a wait fails: what the engine was doing
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
)
