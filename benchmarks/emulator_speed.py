"""Streaming throughput of one emulator process: tokens/s and CPU per token at N streams.

One emulator child process (pinned to CPU 0 with taskset when available, ``--time-scale``
small enough that the modelled GPU is never the limit) serves N concurrent streaming
``/v1/completions`` requests (``ignore_eos``, long ``max_tokens``) from an aiohttp+uvloop client
in this process (pinned to CPU 1).  After a warm-up the script counts streamed token chunks
over a fixed window and reads the emulator's CPU time (``/proc/PID/stat``) and the time it
waited for a CPU (``/proc/PID/schedstat``: non-zero when other processes share its core) over
the same window.  ``tok/CPU-s`` (tokens per emulator CPU-second) is what one dedicated core
would sustain.  Prints a table and writes JSON.

    .venv/bin/python benchmarks/emulator_speed.py [--streams 500] [--window 5]
        [--time-scale 0.05] [--flavor vllm] [--out benchmarks/results/emulator_speed.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ascendra_proxy.emulator.process import emulator_process

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's main thread was runnable but waiting for a CPU (shared machine)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Counters:
    tokens: int = 0
    first_token_s: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    measuring: bool = False
    expected: int = 0
    all_started: asyncio.Event = field(default_factory=asyncio.Event)


async def one_stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], counters: Counters
) -> None:
    start = time.monotonic()
    last: float | None = None
    async with session.post(url, json=body) as resp:
        resp.raise_for_status()
        async for data in resp.content.iter_any():
            n = data.count(b"data: {")
            if not n:
                continue
            now = time.monotonic()
            if last is None:
                counters.first_token_s.append(now - start)
                if len(counters.first_token_s) == counters.expected:
                    counters.all_started.set()
            elif counters.measuring:
                counters.gaps_ms.append((now - last) * 1000.0 / n)
            last = now
            if counters.measuring:
                counters.tokens += n


async def drive(
    url: str, pid: int, streams: int, window: float, warmup: float, path: str
) -> dict[str, float]:
    counters = Counters(expected=streams)
    body = {"prompt": "the model", "max_tokens": 7000, "ignore_eos": True, "stream": True}
    if path.endswith("chat/completions"):
        body = {
            "messages": [{"role": "user", "content": "the model"}],
            "max_tokens": 7000,
            "ignore_eos": True,
            "stream": True,
        }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            asyncio.create_task(one_stream(session, url + path, body, counters))
            for _ in range(streams)
        ]
        await asyncio.wait_for(counters.all_started.wait(), 60.0)
        await asyncio.sleep(warmup)
        counters.measuring = True
        t0 = time.monotonic()
        cpu_start, wait_start = cpu_seconds(pid), runqueue_wait_s(pid)
        await asyncio.sleep(window)
        cpu = cpu_seconds(pid) - cpu_start
        waited = runqueue_wait_s(pid) - wait_start
        elapsed = time.monotonic() - t0
        counters.measuring = False
        alive = sum(not t.done() for t in tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await t
    gaps = sorted(counters.gaps_ms) or [0.0]
    return {
        "streams": streams,
        "streams_alive_at_end": alive,
        "window_s": elapsed,
        "tokens": counters.tokens,
        "tokens_per_s": counters.tokens / elapsed,
        "emulator_cpu_s": cpu,
        "emulator_cpu_util": cpu / elapsed,
        "cpu_us_per_token": cpu / max(1, counters.tokens) * 1e6,
        "tokens_per_cpu_s": counters.tokens / cpu if cpu > 0 else 0.0,
        "emulator_runqueue_wait_share": waited / elapsed,
        "ttft_p50_s": statistics.median(counters.first_token_s),
        "gap_p50_ms": gaps[len(gaps) // 2],
        "gap_p99_ms": gaps[int(0.99 * (len(gaps) - 1))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--flavor", choices=("vllm", "sglang"), default="vllm")
    parser.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/emulator_speed.json")
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    rows = []
    for streams in args.streams:
        emu_args = [
            "--flavor",
            args.flavor,
            "--time-scale",
            str(args.time_scale),
            "--max-num-seqs",
            str(max(256, streams)),
            "--num-gpu-blocks",
            "600000",
            "--max-num-batched-tokens",
            "8192",
        ]
        with emulator_process(emu_args, cpus="0" if pin else None) as emu:
            if pin:
                os.sched_setaffinity(0, {1})
            path = "/v1/chat/completions" if args.chat else "/v1/completions"
            row = run_loop(drive(emu.url, emu.pid, streams, args.window, args.warmup, path))
        rows.append(row)
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "emulator_speed",
        "flavor": args.flavor,
        "chat": args.chat,
        "time_scale": args.time_scale,
        "pinned": pin,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def run_loop(coro: Coroutine[Any, Any, dict[str, float]]) -> dict[str, float]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def print_table(rows: list[dict[str, float]]) -> None:
    head = (
        "streams",
        "tok/s",
        "emu CPU",
        "CPU-starved",
        "µs CPU/tok",
        "tok/CPU-s",
        "TTFT p50 s",
        "gap p50 ms",
        "gap p99 ms",
    )
    print(" | ".join(f"{h:>10}" for h in head))
    for r in rows:
        values = (
            r["streams"],
            f"{r['tokens_per_s']:,.0f}",
            f"{r['emulator_cpu_util']:.0%}",
            f"{r['emulator_runqueue_wait_share']:.0%}",
            f"{r['cpu_us_per_token']:.1f}",
            f"{r['tokens_per_cpu_s']:,.0f}",
            f"{r['ttft_p50_s']:.2f}",
            f"{r['gap_p50_ms']:.1f}",
            f"{r['gap_p99_ms']:.1f}",
        )
        print(" | ".join(f"{v:>10}" for v in values))


if __name__ == "__main__":
    raise SystemExit(main())
