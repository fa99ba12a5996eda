"""Proxy overhead: clients -> proxy -> emulated backends vs clients -> backends, side by side.

Theory of operation
-------------------
Three processes:

- the **load process** (pinned to CPU 0) runs two emulated vLLM backends and the clients in
  one uvloop.  Both are raw asyncio protocols, so the load side costs as little as Python
  allows: the backends are paced vLLM-shaped SSE servers (a fixed prefill delay, then one
  chunk per token every ``--itl-ms`` on an absolute schedule, honouring
  ``return_token_ids`` and ``stream_options`` like vLLM; each chunk carries its send time in
  an extra ``"t"`` field); the clients run ``C`` keep-alive workers that re-issue a plain
  OpenAI streaming request as soon as the previous stream ends (worker ``i`` starts at
  ``i/C`` of the first stream's length, so phases are spread);
- the **proxy** (``ascendra-proxy serve``, pinned to CPU 1) in front of both backends, and
  on the same CPU the reference hops: a bare aiohttp passthrough (``raw``) and, when it is
  installed, nginx as a plain streaming reverse proxy (``nginx``, see ``nginx_hop.py``;
  without nginx that column is skipped with a note);
- this **driver**, which starts both, and for each concurrency runs the direct path and the
  proxied path back to back in one invocation (order shuffled per repetition).

Per run, inside the measurement window (after ``--warmup``), the clients record: TTFT
(request written -> first token chunk read), every inter-token gap as the client sees it,
and one-way chunk latency (backend send -> client read, same host clock).  Proxy CPU comes
from ``/proc/<pid>/task/*/schedstat`` at the window edges; per-core busy from ``/proc/stat``.
"Added" numbers are proxied minus direct at the same concurrency and repetition; the report
takes the median over repetitions.  ``--saturate`` adds a run where the backends stream as
fast as the load core can, to find the proxy's token throughput on its one core.

Usage::

    .venv/bin/python benchmarks/proxy_overhead.py                      # 64, 256, 1000 streams
    .venv/bin/python benchmarks/proxy_overhead.py --streams 256 --duration 10 --reps 1
    .venv/bin/python benchmarks/proxy_overhead.py --streams 64,256 --duration 5 --reps 1 \
        --saturate 0                                    # quick: paced only, with nginx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from nginx_hop import NginxHop, find_nginx

MODEL = "bench-model"
CHUNK = (
    b'{"id":"cmpl-b%d","object":"text_completion","created":1700000000,"model":"'
    + MODEL.encode()
    + b'","choices":[{"index":0,"text":" tok","logprobs":null,"finish_reason":%s,'
    b'"stop_reason":null%s}]%s,"t":%d}'
)
USAGE_ONLY = (
    b'{"id":"cmpl-b%d","object":"text_completion","created":1700000000,"choices":[],"usage":%s}'
)
METRICS = (
    b"vllm:num_requests_running %d\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n"
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


# --------------------------------------------------------------------------- emulated backend


@dataclass
class Pace:
    """Shared by every backend connection; the driver changes it between phases."""

    prefill_s: float
    itl_s: float


class BackendConn(asyncio.Protocol):
    """One keep-alive connection of the emulated vLLM backend (one stream at a time)."""

    active = 0

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            BackendConn.active -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = _content_length(head)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
            self.handle(head, body)

    def handle(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"get"):
            payload = METRICS % BackendConn.active if b"/metrics" in head[:40] else b"{}"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            return
        req = orjson.loads(body)
        opts = req.get("stream_options") or {}
        self.n = int(req.get("max_tokens") or 16)
        self.ids = bool(req.get("return_token_ids"))
        self.usage_each = bool(opts.get("continuous_usage_stats"))
        self.usage_end = bool(opts.get("include_usage"))
        self.i = 0
        self.rid = random.getrandbits(31)
        self.itl_s = self.pace.itl_s
        self.t0 = self.loop.time() + self.pace.prefill_s
        self.transport.write(SSE_HEAD)
        BackendConn.active += 1
        self.timer = self.loop.call_at(self.t0, self.tick)

    def tick(self) -> None:
        assert self.transport is not None
        self.i += 1
        i, n = self.i, self.n
        ids = b',"token_ids":[%d]' % (1000 + i) if self.ids else b""
        usage = b',"usage":' + _usage(i) if self.usage_each else b""
        finish = b'"length"' if i == n else b"null"
        data = b"data: " + CHUNK % (self.rid, finish, ids, usage, time.monotonic_ns()) + b"\n\n"
        if i == n:
            if self.usage_end:
                data += b"data: " + USAGE_ONLY % (self.rid, _usage(n)) + b"\n\n"
            data += b"data: [DONE]\n\n"
            self.transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            self.timer = None
            BackendConn.active -= 1
            return
        self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.timer = self.loop.call_at(self.t0 + i * self.itl_s, self.tick)


def _content_length(head: bytes) -> int:
    pos = head.find(b"content-length:")
    if pos < 0:
        return 0
    end = head.find(b"\r\n", pos)
    return int(head[pos + 15 : end if end >= 0 else len(head)])


def _usage(n: int) -> bytes:
    return b'{"prompt_tokens":8,"total_tokens":%d,"completion_tokens":%d}' % (8 + n, n)


# --------------------------------------------------------------------------- clients

TOKEN_MARK = b'data: {"id"'
END_MARK = b"\r\n0\r\n\r\n"  # the chunked-encoding terminator: the response is complete
TAIL = len(TOKEN_MARK) - 1  # bytes carried to the next read: a mark split across reads counts once
T_MARK = b'"t":'


@dataclass
class Recorder:
    start_ns: int = 0
    end_ns: int = 0
    ttft: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    latency: list[int] = field(default_factory=list)
    tokens: int = 0
    streams: int = 0
    errors: int = 0

    def inside(self, t: int) -> bool:
        return self.start_ns <= t < self.end_ns


class ClientConn(asyncio.Protocol):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[bool] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, request: bytes) -> asyncio.Future[bool]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.headers_seen = False
        self.tail = b""
        self.first_ns = 0
        self.last_ns = 0
        self.sent_ns = time.monotonic_ns()
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.headers_seen:
            if not data.startswith(b"HTTP/1.1 200"):
                self.rec.errors += 1
                assert self.transport is not None
                self.transport.close()
                return
            self.headers_seen = True
        carried = len(self.tail)
        scan = self.tail + data
        self.tail = scan[-TAIL:]
        n = scan.count(TOKEN_MARK)
        rec = self.rec
        if n:
            if self.first_ns == 0:
                self.first_ns = now
                if rec.inside(self.sent_ns):
                    rec.ttft.append(now - self.sent_ns)
            elif rec.inside(now):
                rec.gaps.append(now - self.last_ns)
            if rec.inside(now):
                rec.tokens += n
                rec.gaps.extend([0] * (n - 1))
                _latencies(scan, carried, now, rec.latency)
            self.last_ns = now
        if END_MARK in scan and self.done is not None and not self.done.done():
            if rec.inside(now):
                rec.streams += 1
            self.done.set_result(True)


def _latencies(scan: bytes, carried: int, now: int, out: list[int]) -> None:
    """One-way latencies of the ``"t":<ns>}`` stamps that complete in this read."""
    pos = scan.find(T_MARK)
    while pos >= 0:
        end = scan.find(b"}", pos)
        if end < 0:
            return
        if end >= carried:
            out.append(now - int(scan[pos + 4 : end]))
        pos = scan.find(T_MARK, pos + 4)


def request_bytes(host: str, port: int, tokens: int) -> bytes:
    body = orjson.dumps(
        {"model": MODEL, "prompt": "benchmark", "max_tokens": tokens, "stream": True}
    )
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, len(body), body)
    )


async def worker(
    targets: list[tuple[str, int]],
    index: int,
    spread_s: float,
    stop_ns: int,
    rec: Recorder,
    tokens: int,
) -> None:
    loop = asyncio.get_running_loop()
    host, port = targets[index % len(targets)]
    await asyncio.sleep(spread_s)
    request = request_bytes(host, port, tokens)
    while time.monotonic_ns() < stop_ns:
        _, conn = await loop.create_connection(lambda: ClientConn(rec), host, port)
        while time.monotonic_ns() < stop_ns:
            if not await conn.send(request):
                rec.errors += 1
                break
        if conn.transport is not None:
            conn.transport.close()
        await conn.closed


# --------------------------------------------------------------------------- CPU accounting


def sched_ns(pid: int | None) -> tuple[int, int]:
    """(on-CPU, waiting-to-run) ns summed over a process's threads (/proc schedstat).

    The waiting time is the noise gauge: a proxy that is runnable but not running because
    other tenants hold its core shows it here, whatever its own CPU use.
    """
    if not pid:
        return 0, 0
    run = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


def core_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out.append((sum(v) - idle, sum(v)))
    return out


def busy_between(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[float]:
    return [
        round(100 * (b1 - b0) / max(1, t1 - t0), 1) for (b0, t0), (b1, t1) in zip(a, b, strict=True)
    ]


# --------------------------------------------------------------------------- load process


async def run_phase(cmd: dict[str, Any]) -> dict[str, Any]:
    rec = Recorder()
    c, tokens = cmd["streams"], cmd["tokens"]
    stream_s = cmd["prefill_s"] + tokens * cmd["itl_s"]
    now = time.monotonic_ns()
    rec.start_ns = now + int(cmd["warmup_s"] * 1e9)
    rec.end_ns = rec.start_ns + int(cmd["duration_s"] * 1e9)
    targets = [tuple(t) for t in cmd["targets"]]
    pids = cmd.get("proxy_pids") or [cmd.get("proxy_pid")]  # several: summed (stream workers)
    side = cmd.get("side_pids") or []  # reported apart (a scheduler)
    edges: dict[str, Any] = {}

    async def sample(key: str, at_ns: int) -> None:
        await asyncio.sleep(max(0.0, (at_ns - time.monotonic_ns()) / 1e9))
        proxy = tuple(map(sum, zip(*(sched_ns(p) for p in pids), strict=True)))
        edges[key] = (proxy, sched_ns(os.getpid()), core_times(), time.monotonic_ns())
        edges[key + "side"] = sum(sched_ns(p)[0] for p in side)

    samplers = [
        asyncio.create_task(sample("a", rec.start_ns)),
        asyncio.create_task(sample("b", rec.end_ns)),
    ]
    spread = stream_s / c
    await asyncio.gather(
        *(worker(targets, i, i * spread, rec.end_ns, rec, tokens) for i in range(c))
    )
    await asyncio.gather(*samplers)
    ((cpu0, wait0), (lcpu0, lwait0), cores0, t0) = edges["a"]
    ((cpu1, wait1), (lcpu1, lwait1), cores1, t1) = edges["b"]
    wall = (t1 - t0) / 1e9
    return {
        "ttft_ms": _pcts(rec.ttft),
        "gap_ms": _pcts(rec.gaps),
        "latency_ms": _pcts(rec.latency),
        "tokens_per_s": rec.tokens / wall,
        "streams_per_s": rec.streams / wall,
        "errors": rec.errors,
        "wall_s": wall,
        "tokens": rec.tokens,
        "proxy_cpu_frac": (cpu1 - cpu0) / 1e9 / wall,
        "proxy_cpu_us_per_token": (cpu1 - cpu0) / 1e3 / max(1, rec.tokens),
        "proxy_runqueue_wait_frac": (wait1 - wait0) / 1e9 / wall,
        "load_cpu_frac": (lcpu1 - lcpu0) / 1e9 / wall,
        "load_runqueue_wait_frac": (lwait1 - lwait0) / 1e9 / wall,
        "core_busy_pct": busy_between(cores0, cores1),
        "side_cpu_s": (edges["bside"] - edges["aside"]) / 1e9,
        "samples": len(rec.ttft),
    }


def _pcts(values: list[int]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    s = sorted(values)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] / 1e6

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "n": len(s)}


async def load_main(pace: Pace, nbackends: int) -> None:
    loop = asyncio.get_running_loop()
    ports = []
    for _ in range(nbackends):
        server = await loop.create_server(lambda: BackendConn(pace), "127.0.0.1", 0, backlog=4096)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        pace.prefill_s, pace.itl_s = cmd["prefill_s"], cmd["itl_s"]
        print(json.dumps(await run_phase(cmd)), flush=True)


# --------------------------------------------------------------------------- reference hop


async def raw_proxy_main(ports: list[int]) -> None:
    """The floor: a bare aiohttp + uvloop passthrough (no parsing, policy or accounting)."""
    from aiohttp import ClientSession, TCPConnector, web

    session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
    turn = [0]

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        turn[0] += 1
        url = f"http://127.0.0.1:{ports[turn[0] % len(ports)]}/v1/completions"
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as up:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for data in up.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_post("/v1/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


# --------------------------------------------------------------------------- driver


def pin(pid: int, cpu: int) -> None:
    if cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(pid, {cpu})


class LoadProcess:
    def __init__(self, backends: int, cpu: int) -> None:
        cmd = [sys.executable, __file__, "_load", "--backends", str(backends)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pin(self.proc.pid, cpu)
        assert self.proc.stdout is not None
        self.ports: list[int] = json.loads(self.proc.stdout.readline())["ports"]

    def phase(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("load process died")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def proxy_config(ports: list[int], policy: str) -> str:
    backends = "\n".join(
        f'      - {{name: b{i}, url: "http://127.0.0.1:{p}", engine: vllm, model: {MODEL}}}'
        for i, p in enumerate(ports)
    )
    return (
        f"listen: {{host: 127.0.0.1, port: 0}}\npools:\n  - name: main\n    role: mixed\n"
        f"    backends:\n{backends}\npolicy: {{type: {policy}}}\n"
    )


class ServerProcess:
    """A proxy under test (ours, or the bare reference hop), pinned to its own CPU."""

    def __init__(self, cmd: list[str], cpu: int) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        pin(self.proc.pid, cpu)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on http://" not in line:
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    @classmethod
    def ours(cls, ports: list[int], policy: str, cpu: int, workdir: Path) -> ServerProcess:
        path = workdir / "proxy.yaml"
        path.write_text(proxy_config(ports, policy))
        serve = ["-m", "ascendra_proxy.cli", "serve", "--config", str(path)]
        return cls([sys.executable, *serve, "--log-level", "WARNING"], cpu)

    @classmethod
    def raw(cls, ports: list[int], cpu: int) -> ServerProcess:
        return cls([sys.executable, __file__, "_rawproxy", ",".join(map(str, ports))], cpu)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def idle_noise(seconds: float) -> list[float]:
    a = core_times()
    time.sleep(seconds)
    return busy_between(a, core_times())


def print_run(r: dict[str, Any]) -> None:
    print(
        f"  {r['kind']:8s} C={r['streams']:5d} rep={r['rep']} {r['path']:6s}"
        f" ttft p50 {r['ttft_ms']['p50']:.2f} ms  tok/s {r['tokens_per_s']:.0f}"
        f"  proxy cpu {100 * r['proxy_cpu_frac']:.0f}% (waiting to run"
        f" {100 * r['proxy_runqueue_wait_frac']:.0f}%)  load cpu {100 * r['load_cpu_frac']:.0f}%"
        f" (waiting {100 * r['load_runqueue_wait_frac']:.0f}%)  cores {r['core_busy_pct']}"
        f"  errors {r['errors']}",
        flush=True,
    )


Hop = ServerProcess | NginxHop  # each has ``port``, ``proc`` and ``stop``


def run_matrix(
    args: argparse.Namespace, load: LoadProcess, servers: dict[str, Hop]
) -> list[dict[str, Any]]:
    """Every (concurrency, repetition): direct and each proxy path, in shuffled order."""
    rows: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    itls = args.itl_ms if len(args.itl_ms) > 1 else args.itl_ms * len(args.streams)
    if len(itls) != len(args.streams):
        raise SystemExit("--itl-ms takes one value or one per --streams entry")
    plan = [(c, itl, "paced") for c, itl in zip(args.streams, itls, strict=True)]
    if args.saturate:
        plan.append((args.saturate, args.saturate_itl_ms, "saturate"))
    for c, itl_ms, kind in plan:
        for rep in range(args.reps):
            order = ["direct", *servers]
            rng.shuffle(order)
            for path in order:
                server = servers.get(path, servers["proxy"])
                ports = load.ports if path == "direct" else [server.port]
                cmd = {
                    "streams": c,
                    "tokens": args.tokens,
                    "prefill_s": args.prefill_ms / 1e3,
                    "itl_s": itl_ms / 1e3,
                    "warmup_s": args.warmup,
                    "duration_s": args.duration,
                    "targets": [["127.0.0.1", p] for p in ports],
                    "proxy_pid": server.proc.pid,
                }
                result = load.phase(cmd)
                rows.append(
                    {
                        "streams": c,
                        "itl_ms": itl_ms,
                        "kind": kind,
                        "rep": rep,
                        "path": path,
                        **result,
                    }
                )
                print_run(rows[-1])
                time.sleep(args.settle)
    return rows


def _med(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return round(statistics.median(values), 3) if values else float("nan")


Pair = tuple[dict[str, Any], dict[str, Any]]  # (direct run, proxied run) of one repetition


def _added(pairs: list[Pair], metric: str, q: str) -> float:
    return _med([p[metric][q] - d[metric][q] for d, p in pairs])


def _direct(pairs: list[Pair], metric: str, q: str) -> float:
    return _med([d[metric][q] for d, _ in pairs])


def path_stats(pairs: list[Pair], prefix: str) -> dict[str, Any]:
    """Added latency (vs direct) and CPU cost of one proxy path."""
    tps = _med([p["tokens_per_s"] for _, p in pairs])
    cpu = _med([p["proxy_cpu_frac"] for _, p in pairs])
    row: dict[str, Any] = {}
    for metric in ("ttft_ms", "gap_ms", "latency_ms"):
        for q in ("p50", "p99"):
            row[f"{prefix}added_{metric.removesuffix('_ms')}_{q}_ms"] = _added(pairs, metric, q)
    row[f"{prefix}tokens_per_s"] = tps
    row[f"{prefix}cpu_pct"] = round(100 * cpu, 1)
    row[f"{prefix}cpu_us_per_token"] = _med([p["proxy_cpu_us_per_token"] for _, p in pairs])
    row[f"{prefix}tokens_per_cpu_s"] = round(tps / cpu) if cpu > 0 else None
    row[f"{prefix}runqueue_wait_pct"] = _med(
        [100 * p["proxy_runqueue_wait_frac"] for _, p in pairs]
    )
    return row


def summary_row(kind: str, streams: int, reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    direct_proxy = [(r["direct"], r["proxy"]) for r in reps]
    row: dict[str, Any] = {"kind": kind, "streams": streams, "reps": len(reps)}
    for metric in ("ttft_ms", "gap_ms", "latency_ms"):
        for q in ("p50", "p99"):
            row[f"direct_{metric.removesuffix('_ms')}_{q}_ms"] = _direct(direct_proxy, metric, q)
    row["direct_tokens_per_s"] = _med([d["tokens_per_s"] for d, _ in direct_proxy])
    row.update(path_stats(direct_proxy, "proxy_"))
    for hop in REFERENCE_HOPS:
        if all(hop in r for r in reps):
            row.update(path_stats([(r["direct"], r[hop]) for r in reps], hop + "_"))
            # CPU per token of the proxy relative to the reference hop's, same runs
            ratios = [
                r["proxy"]["proxy_cpu_us_per_token"] / r[hop]["proxy_cpu_us_per_token"]
                for r in reps
                if r[hop]["proxy_cpu_us_per_token"] > 0
            ]
            row[f"proxy_cpu_per_token_vs_{hop}"] = _med(ratios) if ratios else None
    row["load_core_busy_pct"] = _med([r["proxy"]["core_busy_pct"][0] for r in reps])
    row["load_runqueue_wait_pct"] = _med(
        [100 * r["proxy"]["load_runqueue_wait_frac"] for r in reps]
    )
    row["errors"] = sum(run["errors"] for r in reps for run in r.values())
    return row


REFERENCE_HOPS = ("raw", "nginx")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], dict[int, dict[str, dict[str, Any]]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["streams"]), {}).setdefault(r["rep"], {})[r["path"]] = r
    order = sorted(groups, key=lambda k: (k[0] != "paced", k[1]))
    return [summary_row(kind, c, list(groups[(kind, c)].values())) for kind, c in order]


COLUMNS = [  # (header, key, format)
    ("kind", "kind", "{:8s}"),
    ("C", "streams", "{:5d}"),
    ("TTFT direct", "direct_ttft_p50_ms", "{:8.2f}ms"),
    ("+TTFT p50", "proxy_added_ttft_p50_ms", "{:+8.2f}"),
    ("+TTFT p99", "proxy_added_ttft_p99_ms", "{:+8.2f}"),
    ("+gap p99", "proxy_added_gap_p99_ms", "{:+8.2f}"),
    ("+lat p50", "proxy_added_latency_p50_ms", "{:+8.2f}"),
    ("+lat p99", "proxy_added_latency_p99_ms", "{:+8.2f}"),
    ("tok/s", "proxy_tokens_per_s", "{:8.0f}"),
    ("CPU", "proxy_cpu_pct", "{:5.1f}%"),
    ("us/tok", "proxy_cpu_us_per_token", "{:6.1f}"),
    ("raw +TTFT p50", "raw_added_ttft_p50_ms", "{:+8.2f}"),
    ("raw +TTFT p99", "raw_added_ttft_p99_ms", "{:+8.2f}"),
    ("raw +gap p99", "raw_added_gap_p99_ms", "{:+8.2f}"),
    ("raw +lat p99", "raw_added_latency_p99_ms", "{:+8.2f}"),
    ("raw us/tok", "raw_cpu_us_per_token", "{:6.1f}"),
    ("nginx +gap p99", "nginx_added_gap_p99_ms", "{:+8.2f}"),
    ("nginx +lat p99", "nginx_added_latency_p99_ms", "{:+8.2f}"),
    ("nginx us/tok", "nginx_cpu_us_per_token", "{:6.1f}"),
    ("us/tok vs raw", "proxy_cpu_per_token_vs_raw", "{:5.2f}x"),
    ("us/tok vs nginx", "proxy_cpu_per_token_vs_nginx", "{:5.2f}x"),
    ("wait", "proxy_runqueue_wait_pct", "{:4.0f}%"),
    ("load wait", "load_runqueue_wait_pct", "{:4.0f}%"),
    ("errors", "errors", "{:5d}"),
]


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def print_table(summary: list[dict[str, Any]]) -> None:
    cells = [[h for h, _, _ in COLUMNS]]
    for s in summary:
        cells.append([_cell(s.get(key), fmt) for _, key, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(
        "(+: added vs direct, ms, median over repetitions; lat: one-way chunk latency; raw: a bare"
        " aiohttp passthrough hop for reference; nginx: nginx as a streaming reverse proxy"
        " (proxy_buffering off, keep-alive upstreams), one process on the proxy's core;"
        " us/tok vs X: the proxy's CPU per token over X's, same repetition; wait: share of"
        " the window the proxy was runnable but not running, i.e. other tenants held its core)"
    )


def goals(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals for the proxy, and the same figures for the bare aiohttp hop: what
    the stack alone costs on this machine, measured in the same runs."""
    at256 = next((s for s in summary if s["kind"] == "paced" and s["streams"] == 256), None)
    best = max((s["proxy_tokens_per_cpu_s"] or 0 for s in summary), default=0)
    delivered = max((s["proxy_tokens_per_s"] for s in summary), default=0)
    paced = [s for s in summary if s["kind"] == "paced"]

    def worst_gap(prefix: str) -> float:
        gaps = [s.get(prefix + "added_gap_p99_ms") for s in paced]
        return max((g for g in gaps if g is not None), default=float("nan"))

    def at(key: str) -> float | None:
        return None if at256 is None else at256.get(key)

    def worst_ratio(hop: str) -> float | None:
        ratios = [s.get(f"proxy_cpu_per_token_vs_{hop}") for s in paced]
        return max((r for r in ratios if r is not None), default=None)

    return {
        "added_ttft_p50_ms_at_256 (<= 1)": at("proxy_added_ttft_p50_ms"),
        "added_ttft_p99_ms_at_256 (<= 5)": at("proxy_added_ttft_p99_ms"),
        "worst_added_gap_p99_ms (<= 0.5)": worst_gap("proxy_"),
        "max_delivered_tokens_per_s": delivered,
        "proxy_tokens_per_cpu_second (>= 30000)": best,
        "bare_hop_added_ttft_p50_ms_at_256": at("raw_added_ttft_p50_ms"),
        "bare_hop_added_ttft_p99_ms_at_256": at("raw_added_ttft_p99_ms"),
        "bare_hop_worst_added_gap_p99_ms": worst_gap("raw_"),
        "proxy_cpu_per_paced_token_vs_bare_hop_worst (<= 1.2)": worst_ratio("raw"),
        "proxy_cpu_per_paced_token_vs_nginx_worst (<= 3)": worst_ratio("nginx"),
        "nginx_worst_added_gap_p99_ms": worst_gap("nginx_"),
    }


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--streams", type=ints, default=[64, 256, 1000], help="concurrent streams, comma list"
    )
    p.add_argument("--tokens", type=int, default=100, help="tokens per stream")
    p.add_argument(
        "--itl-ms",
        type=floats,
        default=[20.0],
        help="backend inter-token latency, ms: one value, or one per --streams entry",
    )
    p.add_argument("--prefill-ms", type=float, default=5.0, help="backend delay before token 1")
    p.add_argument("--duration", type=float, default=15.0, help="measurement window, s")
    p.add_argument("--warmup", type=float, default=4.0, help="s before the window opens")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0, help="pause between runs, s")
    p.add_argument(
        "--saturate", type=int, default=1000, help="streams for the throughput run (0: off)"
    )
    p.add_argument("--saturate-itl-ms", type=float, default=2.0)
    p.add_argument("--policy", default="least_loaded")
    p.add_argument("--no-raw", action="store_true", help="skip the bare aiohttp reference hop")
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx reference hop")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="proxy_overhead.json", help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_rawproxy"]:
        import uvloop

        uvloop.run(raw_proxy_main([int(p) for p in argv[1].split(",")]))
        return 0
    if argv[:1] == ["_load"]:
        import uvloop

        backends = int(argv[argv.index("--backends") + 1])
        uvloop.run(load_main(Pace(0.005, 0.02), backends))
        return 0
    args = parse_args(argv)
    nginx = None if args.no_nginx else find_nginx()
    nginx_note = "skipped (--no-nginx)" if args.no_nginx else "used: " + str(nginx)
    if not args.no_nginx and nginx is None:
        nginx_note = "not installed (e.g. apt-get install nginx): the nginx column is skipped"
    print(f"nginx reference hop: {nginx_note}", flush=True)
    noise = idle_noise(3.0)
    print(f"idle CPU busy per core before the run (other tenants): {noise}%", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        load = LoadProcess(backends=2, cpu=0)
        servers: dict[str, Hop] = {}
        try:
            servers["proxy"] = ServerProcess.ours(load.ports, args.policy, 1, Path(tmp))
            if not args.no_raw:
                servers["raw"] = ServerProcess.raw(load.ports, 1)
            if nginx is not None:
                servers["nginx"] = NginxHop(nginx, load.ports, Path(tmp))
                pin(servers["nginx"].proc.pid, 1)
            rows = run_matrix(args, load, servers)
        finally:
            for server in servers.values():
                server.stop()
            load.stop()
    summary = summarize(rows)
    print()
    print_table(summary)
    result = {
        "config": vars(args),
        "nginx": nginx_note,
        "idle_noise_pct": noise,
        "noise_after_pct": idle_noise(3.0),
        "summary": summary,
        "goals": goals(summary),
        "runs": rows,
    }
    print("\ngoals:", json.dumps(result["goals"], indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
