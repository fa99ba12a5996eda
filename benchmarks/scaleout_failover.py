"""Failover under load: kill the leading scheduler, time the standby, count lost requests.

Theory of operation
-------------------
A private ``redis-server`` (free loopback port), three emulated vLLM engines (2 LP + 1 HP,
``ascendra`` policy), two schedulers with the Redis lease (TTL ``--ttl``) and two stream
workers sharing one port, all as processes.  This driver keeps ``--clients`` streaming
requests in flight through the shared port for the whole run, and ``--kills`` times:
finds the leader (``/ready``), SIGKILLs it, and polls the other scheduler every 10 ms for
the moment it leads (``/ready`` 200 with a higher epoch) and the moment both workers are
connected to it again; then starts the killed one again as the new standby.

Every client request must complete with exactly ``--tokens`` tokens and ``[DONE]``: any
other ending counts as lost (a duplicated continuation would show as extra tokens).

Usage::

    .venv/bin/python benchmarks/scaleout_failover.py --kills 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

MODEL = "llama3-8b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        cmd = [sys.executable, "-m", "ascendra_proxy.cli", *args]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server") or "redis-server"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL)


async def scheduler_state(http: aiohttp.ClientSession, port: int, epoch: int, workers: int) -> bool:
    """The scheduler leads with an epoch above ``epoch`` and ``workers`` workers."""
    b = await ready(http, port)
    return b is not None and b["epoch"] > epoch and len(b["workers"]) >= workers


def config(engines: dict[str, int], port: int) -> str:
    def backend(name: str) -> str:
        return (
            f'      - {{name: {name}, url: "http://127.0.0.1:{engines[name]}", engine: vllm,'
            f" model: {MODEL}, engine_settings: {{profile: a100-llama3-8b,"
            " scheduling_policy: priority}}\n"
        )

    return (
        f"listen: {{host: 127.0.0.1, port: {port}}}\npools:\n"
        "  - name: lp\n    role: lp\n    backends:\n"
        + backend("lp-0")
        + backend("lp-1")
        + "  - name: hp\n    role: hp\n    backends:\n"
        + backend("hp-0")
        + "slo:\n  default: {ttft_ms: 5000, tpot_ms: 500}\npolicy: {type: ascendra}\n"
        "timeouts: {first_byte_s: 60, idle_s: 30, total_s: 120}\n"
    )


async def ready(http: aiohttp.ClientSession, port: int) -> dict[str, Any] | None:
    try:
        async with http.get(f"http://127.0.0.1:{port}/ready") as resp:
            return await resp.json() if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError):
        return None


async def wait_for(check: Any, limit_s: float = 120.0, every_s: float = 0.01) -> float:
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > limit_s:
            raise RuntimeError("timed out")
        await asyncio.sleep(every_s)
    return time.monotonic()


async def client(
    http: aiohttp.ClientSession, url: str, tokens: int, stop: asyncio.Event, out: list[str]
) -> None:
    body = {
        "model": MODEL,
        "prompt": "failover",
        "max_tokens": tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    while not stop.is_set():
        try:
            async with http.post(url + "/v1/completions", json=body) as resp:
                if resp.status != 200:
                    out.append(f"http {resp.status}")
                    continue
                got, done = 0, False
                async for line in resp.content:
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    elif line.startswith(b"data: ") and b'"usage":{' in line:
                        got = json.loads(line[6:])["usage"]["completion_tokens"]
                out.append("ok" if done and got == tokens else f"incomplete {got}")
        except aiohttp.ClientError as exc:
            out.append(type(exc).__name__)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    redis_port = free_port()
    procs.append(start_redis(redis_port))
    engines = {n: free_port() for n in ("lp-0", "lp-1", "hp-0")}
    for name, port in engines.items():
        procs.append(
            cli(
                "emulate",
                "--port",
                str(port),
                "--model",
                MODEL,
                "--scheduling-policy",
                "priority",
                "--time-scale",
                "0.2",
                log=tmp / f"{name}.log",
            )
        )
    shared = free_port()
    cfg = tmp / "proxy.yaml"
    cfg.write_text(config(engines, shared))
    sched_ports = [free_port(), free_port()]
    scheds: dict[int, subprocess.Popen[bytes]] = {}

    def start_scheduler(i: int) -> None:
        scheds[i] = cli(
            "scheduler",
            "--config",
            str(cfg),
            "--listen",
            f"ws://127.0.0.1:{sched_ports[i]}",
            "--elector",
            "redis",
            "--redis",
            f"redis://127.0.0.1:{redis_port}/0",
            "--lease-ttl-s",
            str(args.ttl),
            "--name",
            f"sched-{i}-{time.monotonic_ns()}",
            "--log-level",
            "WARNING",
            log=tmp / f"sched-{i}.log",
        )

    for i in (0, 1):
        start_scheduler(i)
    addrs = [a for p in sched_ports for a in ("--scheduler", f"ws://127.0.0.1:{p}")]
    for i in (0, 1):
        procs.append(
            cli(
                "serve",
                "--config",
                str(cfg),
                "--reuse-port",
                *addrs,
                "--log-level",
                "WARNING",
                log=tmp / f"worker-{i}.log",
            )
        )
    kills: list[dict[str, float]] = []
    outcomes: list[str] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:

            async def leader_with_workers() -> bool:
                bodies = [await ready(http, p) for p in sched_ports]
                return any(b is not None and len(b["workers"]) == 2 for b in bodies)

            await wait_for(leader_with_workers)
            stop = asyncio.Event()
            url = f"http://127.0.0.1:{shared}"
            load = [
                asyncio.create_task(client(http, url, args.tokens, stop, outcomes))
                for _ in range(args.clients)
            ]
            await asyncio.sleep(args.settle)
            for _ in range(args.kills):
                bodies = [await ready(http, p) for p in sched_ports]
                lead = next(i for i, b in enumerate(bodies) if b is not None)
                other, epoch = 1 - lead, bodies[lead]["epoch"]  # type: ignore[index]
                t0 = time.monotonic()
                scheds[lead].send_signal(signal.SIGKILL)
                scheds[lead].wait()

                port = sched_ports[other]
                t_lead = await wait_for(lambda p=port, e=epoch: scheduler_state(http, p, e, 0))
                t_join = await wait_for(lambda p=port, e=epoch: scheduler_state(http, p, e, 2))
                kills.append({"leads_after_s": t_lead - t0, "workers_back_after_s": t_join - t0})
                print(json.dumps(kills[-1]), flush=True)
                start_scheduler(lead)
                await asyncio.sleep(args.settle)
            stop.set()
            await asyncio.gather(*load)
        finally:
            for p in [*procs, *scheds.values()]:
                if p.poll() is None:
                    p.terminate()
            for p in [*procs, *scheds.values()]:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
    lost = [o for o in outcomes if o != "ok"]
    return {
        "kills": kills,
        "leads_after_s_median": statistics.median(k["leads_after_s"] for k in kills),
        "leads_after_s_max": max(k["leads_after_s"] for k in kills),
        "workers_back_after_s_median": statistics.median(k["workers_back_after_s"] for k in kills),
        "requests": len(outcomes),
        "lost": len(lost),
        "lost_kinds": sorted(set(lost)),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--ttl", type=float, default=2.0, help="lease TTL, s")
    p.add_argument("--settle", type=float, default=4.0, help="s of load between kills")
    p.add_argument("--out", default="scaleout_failover.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    result["config"] = vars(args)
    print(f"\nlease TTL {args.ttl} s, {args.kills} kills of the leading scheduler under load:")
    print("standby leads after (median / max) | workers back (median) | requests | lost")
    print(
        f"{result['leads_after_s_median']:.2f} s / {result['leads_after_s_max']:.2f} s |"
        f" {result['workers_back_after_s_median']:.2f} s | {result['requests']} |"
        f" {result['lost']}"
    )
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
