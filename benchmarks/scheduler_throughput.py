"""Scheduler throughput and round trip: how many requests one scheduler process decides.

Theory of operation
-------------------
One scheduler process (``ascendra-proxy scheduler``, pinned to CPU 1) in front of paced
backends that only answer health checks and scrapes (``proxy_overhead.py``'s load process,
CPU 0).  This driver (CPU 0) plays ``W`` stream workers over the real WebSocket protocol:
each keeps ``K`` requests waiting for a decision; on each ``assign`` it sends the request's
``finish`` and a new ``route`` (requests of zero length: only the decision traffic is
measured), and every 50 ms a ``progress`` frame with its ack and counts.

Two phases:

- ``rtt``: one worker, one request at a time: the round trip ``route`` -> ``assign`` (p50,
  p99), what the hop adds to a request's TTFT when the scheduler is idle;
- ``saturate``: ``W`` workers x ``K`` outstanding: decisions per second at a saturated
  scheduler, its CPU share, and CPU per request (``1 / that`` = requests per core-second).

Usage::

    .venv/bin/python benchmarks/scheduler_throughput.py --policy least_loaded --duration 10
    .venv/bin/python benchmarks/scheduler_throughput.py --policy ascendra --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from proxy_overhead import MODEL, LoadProcess, core_times, idle_noise, pin, sched_ns

from ascendra_proxy.core.decisions import Assign, Drop
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.scaleout.messages import (
    ActionMessage,
    Finish,
    Hello,
    Progress,
    RouteAsk,
    Welcome,
    decode,
    encode,
    request_to_wire,
)
from ascendra_proxy.scaleout.transport import connect


def config(ports: list[int], policy: str) -> str:
    role = "lp" if policy == "ascendra" else "mixed"
    backends = "\n".join(
        f'      - {{name: b{i}, url: "http://127.0.0.1:{p}", engine: vllm, model: {MODEL},'
        f" engine_settings: {{max_num_seqs: 100000}}}}"
        for i, p in enumerate(ports)
    )
    return (
        f"listen: {{host: 127.0.0.1, port: 0}}\npools:\n  - name: main\n    role: {role}\n"
        f"    backends:\n{backends}\npolicy: {{type: {policy}}}\n"
        "scrape: {interval_s: 0.5}\n"
    )


class FakeWorker:
    def __init__(self, name: str, outstanding: int, stop: float) -> None:
        self.name, self.k, self.stop = name, outstanding, stop
        self.seq = 0
        self.ack = 0
        self.sent_at: dict[str, float] = {}
        self.rtts: list[float] = []
        self.done = 0
        self.dropped = 0
        self.closed = False  # the scheduler closed the connection (it should not)

    def _route(self) -> RouteAsk:
        self.seq += 1
        now = time.monotonic()
        rid = f"{self.name}-{self.seq}"
        s = RequestState(rid, MODEL, 200, 100, SLO(10.0, 1.0), arrival=now)
        self.sent_at[rid] = now
        return RouteAsk(request_to_wire(s), [])

    async def run(self, address: str) -> None:
        session, ws = await connect(address, 5.0)
        try:
            await ws.send_bytes(encode(Hello(self.name, time.monotonic())))
            welcome = decode(await ws.receive_bytes(timeout=5))
            assert isinstance(welcome, Welcome), welcome
            for _ in range(self.k):
                await ws.send_bytes(encode(self._route()))
            progress = asyncio.create_task(self._progress(ws))
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.BINARY:
                    self.closed = True
                    break
                msg = decode(frame.data)
                if not isinstance(msg, ActionMessage):
                    continue
                a = msg.action
                if isinstance(a, Assign | Drop):
                    now = time.monotonic()
                    self.ack += isinstance(a, Assign)
                    self.dropped += isinstance(a, Drop)
                    self.rtts.append(now - self.sent_at.pop(a.request_id))
                    self.done += 1
                    out = encode(Finish(a.request_id, "completed", now))
                    await ws.send_bytes(out)
                    if now < self.stop:
                        await ws.send_bytes(encode(self._route()))
                    elif not self.sent_at:
                        break
            progress.cancel()
        finally:
            await ws.close()
            await session.close()

    async def _progress(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await asyncio.sleep(0.05)
            await ws.send_bytes(encode(Progress(self.ack, {}, [], [])))


async def phase(address: str, pid: int, workers: int, k: int, warmup: float, dur: float) -> dict:
    t0 = time.monotonic()
    stop = t0 + warmup + dur
    fakes = [FakeWorker(f"w{i}", k, stop) for i in range(workers)]
    tasks = [asyncio.create_task(f.run(address)) for f in fakes]
    await asyncio.sleep(warmup)
    done0, cpu0, cores0, a = (
        sum(f.done for f in fakes),
        sched_ns(pid)[0],
        core_times(),
        time.monotonic(),
    )
    rtt_from = [len(f.rtts) for f in fakes]
    await asyncio.sleep(dur)
    done1, cpu1, cores1, b = (
        sum(f.done for f in fakes),
        sched_ns(pid)[0],
        core_times(),
        time.monotonic(),
    )
    await asyncio.gather(*tasks)
    wall = b - a
    rtts = sorted(x for f, n in zip(fakes, rtt_from, strict=True) for x in f.rtts[n:])
    reqs = done1 - done0
    cpu_s = (cpu1 - cpu0) / 1e9
    return {
        "workers": workers,
        "outstanding": k,
        "requests_per_s": reqs / wall,
        "scheduler_cpu_frac": cpu_s / wall,
        "scheduler_cpu_us_per_request": 1e6 * cpu_s / max(1, reqs),
        "requests_per_core_s": reqs / cpu_s if cpu_s > 0 else None,
        "rtt_p50_ms": 1e3 * rtts[len(rtts) // 2] if rtts else None,
        "rtt_p99_ms": 1e3 * rtts[int(0.99 * len(rtts))] if rtts else None,
        "dropped": sum(f.dropped for f in fakes),
        "closed_by_scheduler": sum(f.closed for f in fakes),
        "core_busy_pct": [
            round(100 * (x1 - x0) / max(1, t1 - tt0), 1)
            for (x0, tt0), (x1, t1) in zip(cores0, cores1, strict=True)
        ],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="least_loaded")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--outstanding", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="scheduler_throughput.json")
    args = p.parse_args(argv)
    noise = idle_noise(2.0)
    print(f"idle CPU busy per core before the run (other tenants): {noise}%", flush=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        load = LoadProcess(backends=4, cpu=0)
        pin(__import__("os").getpid(), 0)
        path = Path(tmp) / "proxy.yaml"
        path.write_text(config(load.ports, args.policy))
        sock = Path(tmp) / "sched.sock"
        cmd = [
            sys.executable,
            "-m",
            "ascendra_proxy.cli",
            "scheduler",
            "--config",
            str(path),
            "--listen",
            f"unix:{sock}",
            "--log-level",
            "WARNING",
        ]
        log = open(Path(args.out).with_suffix(".scheduler.log"), "w")  # noqa: SIM115
        sched = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        pin(sched.pid, 1)
        try:
            assert sched.stdout is not None and "listening" in sched.stdout.readline()
            time.sleep(1.0)
            for rep in range(args.reps):
                for name, w, k in (("rtt", 1, 1), ("saturate", args.workers, args.outstanding)):
                    r = asyncio.run(
                        phase(f"unix:{sock}", sched.pid, w, k, args.warmup, args.duration)
                    )
                    r.update(phase=name, rep=rep, policy=args.policy)
                    runs.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            sched.terminate()
            sched.wait(30)
            log.close()
            load.stop()
    summary = {}
    for name in ("rtt", "saturate"):
        rs = [r for r in runs if r["phase"] == name]
        summary[name] = {
            k: round(statistics.median(r[k] or 0.0 for r in rs), 3)
            for k in (
                "requests_per_s",
                "scheduler_cpu_frac",
                "scheduler_cpu_us_per_request",
                "requests_per_core_s",
                "rtt_p50_ms",
                "rtt_p99_ms",
            )
        }
    print(f"\npolicy {args.policy}, medians of {args.reps} repetitions:")
    print(
        "phase | req/s | scheduler CPU | CPU us/request | req per core-s | RTT p50 ms | RTT p99 ms"
    )
    for name, s in summary.items():
        print(
            f"{name} | {s['requests_per_s']:.0f} | {100 * s['scheduler_cpu_frac']:.0f}% |"
            f" {s['scheduler_cpu_us_per_request']:.0f} | {s['requests_per_core_s']:.0f} |"
            f" {s['rtt_p50_ms']:.3f} | {s['rtt_p99_ms']:.3f}"
        )
    Path(args.out).write_text(
        json.dumps(
            {"config": vars(args), "idle_noise_pct": noise, "summary": summary, "runs": runs},
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
