"""How much streaming load one loadgen process can measure on one core.

Theory of operation: a server process (pinned to the other core when there is one) streams
tokens to many concurrent requests; this process runs the load generator (pinned to one
core) through its public API and records its own CPU time while the load runs.  The loadgen
keeps up if it receives the tokens at the rate the server sends them, with inter-token gaps
still equal to the server's cadence and no send lag; ``cpu_share`` is the share of one core
the loadgen used.

Two servers:

- ``fake`` (default): a minimal raw-asyncio HTTP/1.1 SSE server written here.  Like a real
  engine step, one ticker writes one token event to every open stream each ``tick`` seconds
  (chunked transfer, vLLM-shaped events with a running ``usage``), so it costs little CPU and
  the client sees the same bursty pattern an engine produces.
- ``emulator``: ``ascendra-proxy emulate --time-scale S`` (the project's engine emulator); its
  own speed then bounds the result.

Usage::

    python benchmarks/loadgen_speed.py                     # fake server, default load points
    python benchmarks/loadgen_speed.py --server emulator --points 200x60
    python benchmarks/loadgen_speed.py --points 1000x25,1000x40 --seconds 8

A point ``SxR`` is S concurrent streams at R tokens/s each (against the emulator: S streams of
R x ``--seconds`` tokens, at whatever pace the emulator sets).  Prints a table, writes JSON.
``tok/cpu-s`` (tokens measured per CPU-second of the loadgen) is what one dedicated core can
sustain at that stream count; it holds even when other processes share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from loadgen.client import Target, discover_model, make_session
from loadgen.metrics import RequestRecord, summarize
from loadgen.results import write_json
from loadgen.runner import RunOptions, execute, make_counter, prepare, run_async
from loadgen.workloads import WorkItem

# ----------------------------------------------------------------------------- fake server

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_response(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class _Stream:
    __slots__ = ("done", "prompt", "total", "transport")

    def __init__(self, transport: asyncio.Transport, total: int, prompt: int) -> None:
        self.transport, self.total, self.prompt, self.done = transport, total, prompt, 0


class _Http(asyncio.Protocol):
    """Just enough HTTP/1.1: one request at a time per connection, bodies by Content-Length."""

    def __init__(self, streams: set[_Stream]) -> None:
        self.streams = streams
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._handle(head[0].split(" ")[1], body)

    def _handle(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        if path == "/v1/models":
            self.transport.write(_json_response({"data": [{"id": "fake", "object": "model"}]}))
        elif path == "/tokenize":
            n = 1 + len(orjson.loads(body)["prompt"].split())
            self.transport.write(_json_response({"count": n, "tokens": []}))
        else:
            req = orjson.loads(body)
            self.transport.write(HEAD)
            self.streams.add(_Stream(self.transport, int(req["max_tokens"]), 33))

    def connection_lost(self, exc: Exception | None) -> None:
        self.streams.difference_update([s for s in self.streams if s.transport is self.transport])


async def _ticker(streams: set[_Stream], tick: float) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        finished = []
        for s in streams:
            s.done += 1
            ev = (
                b'data: {"choices":[{"index":0,"text":" tok","finish_reason":%s}],'
                b'"usage":{"prompt_tokens":%d,"completion_tokens":%d}}\n\n'
                % (b'"length"' if s.done == s.total else b"null", s.prompt, s.done)
            )
            if s.done == s.total:
                ev += b"data: [DONE]\n\n"
                finished.append(s)
                s.transport.write(_chunk(ev) + b"0\r\n\r\n")
            else:
                s.transport.write(_chunk(ev))
        streams.difference_update(finished)


async def _serve_fake(tick: float) -> None:
    loop = asyncio.get_running_loop()
    streams: set[_Stream] = set()
    server = await loop.create_server(lambda: _Http(streams), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    await _ticker(streams, tick)


# ----------------------------------------------------------------------------- harness


def _pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def _start_server(args: argparse.Namespace, tick: float) -> tuple[subprocess.Popen[str], str]:
    if args.server == "fake":
        cmd = [sys.executable, __file__, "--serve-fake", str(tick), "pin" if args.pin else "-"]
    else:
        cmd = [sys.executable, "-m", "ascendra_proxy.cli", "emulate", "--port", "0"]
        cmd += ["--time-scale", str(args.time_scale), "--max-num-seqs", "4096"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, line.strip().split("listening on", 1)[1].strip()
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def _items(streams: int, tokens: int, ramp_s: float) -> list[WorkItem]:
    return [
        WorkItem(i, ramp_s * i / streams, 32, tokens, 60.0, 60.0, None, None)
        for i in range(streams)
    ]


def _steady_tok_s(records: list[RequestRecord]) -> float | None:
    """Token rate while every stream was open (last first token .. first end)."""
    starts = [r.chunk_times[0] for r in records if r.chunk_times]
    ends = [r.chunk_times[-1] for r in records if r.chunk_times]
    if not starts:
        return None
    lo, hi = max(starts), min(ends)
    if hi - lo < 0.5:
        return None
    tokens = sum(
        n
        for r in records
        for t, n in zip(r.chunk_times, r.chunk_tokens, strict=True)
        if lo < t <= hi
    )
    return tokens / (hi - lo)


def _peak_concurrency(records: list[RequestRecord]) -> int:
    edges = sorted(
        [(r.sent_s, 1) for r in records if r.sent_s is not None]
        + [(r.end_s, -1) for r in records if r.end_s is not None]
    )
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


async def _measure(url: str, streams: int, rate: float, seconds: float) -> dict[str, Any]:
    async with make_session() as session:
        target = Target(url, await discover_model(session, url, None))
        counter = await make_counter(session, target, None, None)
        items = _items(streams, max(2, round(rate * seconds)), ramp_s=min(1.0, seconds / 4))
        prepared = await prepare(target, items, counter, seed="bench", progress=False)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = await execute(session, target, prepared, RunOptions(progress=False))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    s = summarize(result.records, result.duration_s)
    tick = 1.0 / rate
    return {
        "streams": streams,
        "per_stream_tok_s": rate,
        "offered_tok_s": streams * rate,
        "achieved_tok_s": s["output_tokens"] / wall,
        "steady_tok_s": _steady_tok_s(result.records),
        "tokens": s["output_tokens"],
        "completed": s["completed"],
        "failed": s["failed"],
        "peak_concurrency": _peak_concurrency(result.records),
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_share": cpu / wall,
        "tok_per_cpu_s": s["output_tokens"] / cpu if cpu > 0 else None,
        "chunks": sum(len(r.chunk_times) for r in result.records),
        "itl_p50_over_tick": (s["itl_p50"] or 0) / tick,
        "itl_p99_over_tick": (s["itl_p99"] or 0) / tick,
        "send_lag_p99_ms": (s["send_lag_p99"] or 0) * 1000,
        "ttft_p99_ms": (s["ttft_p99"] or 0) * 1000,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cols = (  # header, key, format
        ("streams", "streams", "{:>8}"),
        ("offered", "offered_tok_s", "{:>9.0f}"),
        ("steady", "steady_tok_s", "{:>9.0f}"),
        ("mean", "achieved_tok_s", "{:>8.0f}"),
        ("peak", "peak_concurrency", "{:>6}"),
        ("cpu", "cpu_share", "{:>6.0%}"),
        ("tok/cpu-s", "tok_per_cpu_s", "{:>10.0f}"),
        ("ITL p50/tick", "itl_p50_over_tick", "{:>13.2f}"),
        ("ITL p99/tick", "itl_p99_over_tick", "{:>13.2f}"),
        ("lag p99 ms", "send_lag_p99_ms", "{:>11.1f}"),
        ("failed", "failed", "{:>7}"),
    )
    widths = [len(fmt.format(0)) for _, _, fmt in cols]
    lines = ["".join(f"{h:>{w}}" for (h, _, _), w in zip(cols, widths, strict=True))]
    for r in rows:
        lines.append("".join(fmt.format(r[key] or 0) for _, key, fmt in cols))
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-fake":
        if sys.argv[3] == "pin":
            _pin(1)
        asyncio.run(_serve_fake(float(sys.argv[2])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", choices=("fake", "emulator"), default="fake")
    p.add_argument("--points", default="250x40,1000x25,1000x40", help="STREAMSxTOK_PER_S,...")
    p.add_argument("--seconds", type=float, default=8.0, help="stream length")
    p.add_argument("--time-scale", type=float, default=0.05, help="emulator time scale")
    p.add_argument("--pin", action="store_true", help="pin loadgen to CPU 0, server to CPU 1")
    p.add_argument("--out", default="results/loadgen_speed.json")
    args = p.parse_args()
    if args.pin:
        _pin(0)
    rows = []
    for point in args.points.split(","):
        streams, rate = (float(x) for x in point.lower().split("x"))
        proc, url = _start_server(args, 1.0 / rate)
        try:
            row = run_async(_measure(url, int(streams), rate, args.seconds))
            if args.server == "emulator":  # the emulator sets its own pace: no offered rate
                row.update(offered_tok_s=None, itl_p50_over_tick=None, itl_p99_over_tick=None)
            rows.append(row)
        finally:
            proc.terminate()
            proc.wait(10)
        print(_table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    print(f"loadgen speed against the {args.server} server ({platform.processor() or 'cpu'})")
    print(_table(rows))
    doc = {"server": args.server, "seconds": args.seconds, "cpus": os.cpu_count(), "points": rows}
    write_json(Path(args.out), doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
