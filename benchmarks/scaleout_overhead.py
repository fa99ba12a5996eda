"""Scale-out overhead: the single process vs stream workers + a scheduler, side by side.

Theory of operation
-------------------
The load process, paced backends, clients and CPU accounting are ``proxy_overhead.py``'s
(load and backends pinned to CPU 0).  Per concurrency and repetition, in shuffled order,
the same clients stream through:

- ``direct``: the backends themselves;
- ``proxy``: today's single process (``serve``), pinned to CPU 1;
- ``split1``: one stream worker (``serve --scheduler unix:...``) and a scheduler process,
  both pinned to CPU 1;
- ``split2``: two workers sharing the port (``SO_REUSEPORT``) and the scheduler, all on
  CPU 1 (this machine has two cores: wall-clock scaling cannot show here, CPU per token can).

Reported per path: CPU per streamed token of the proxy processes (the workers summed; the
scheduler apart, as CPU per request), tokens per worker CPU-second, and TTFT added vs
direct.  The scheduler hop's cost is ``split1`` minus ``proxy`` on TTFT p50, paired by
repetition.  Medians over repetitions.

Usage::

    .venv/bin/python benchmarks/scaleout_overhead.py --streams 64,256 --duration 10 --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy_overhead import LoadProcess, idle_noise, pin, proxy_config

PATHS = ("proxy", "split1", "split2")


class Stack:
    """The processes of one proxy path, pinned to one CPU; ``port`` is where clients go."""

    def __init__(self, name: str, config: Path, workers: int, cpu: int, tmp: Path) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []
        self.scheduler: subprocess.Popen[str] | None = None
        base = [sys.executable, "-m", "ascendra_proxy.cli"]
        common = ["--config", str(config), "--log-level", "WARNING"]
        args: list[str] = []
        if workers:
            sock = tmp / f"{name}.sock"
            self.scheduler = self._start(
                [*base, "scheduler", *common, "--listen", f"unix:{sock}"], cpu, "listening on"
            )
            args = ["--scheduler", f"unix:{sock}", "--reuse-port"]
        self.port = _free_port()
        for _ in range(max(1, workers)):
            cmd = [*base, "serve", *common, "--port", str(self.port), *args]
            self.procs.append(self._start(cmd, cpu, "listening on http://"))

    def _start(self, cmd: list[str], cpu: int, ready: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        pin(proc.pid, cpu)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if ready not in line:
            raise RuntimeError(f"{cmd[3]} did not start: {line!r}")
        return proc

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in [*self.procs, *([self.scheduler] if self.scheduler else [])]:
            p.terminate()
            p.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: argparse.Namespace, load: LoadProcess, stacks: dict[str, Stack]) -> list[dict]:
    rows: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    for c in args.streams:
        for rep in range(args.reps):
            order = ["direct", *stacks]
            rng.shuffle(order)
            for path in order:
                stack = stacks.get(path)
                cmd = {
                    "streams": c,
                    "tokens": args.tokens,
                    "prefill_s": args.prefill_ms / 1e3,
                    "itl_s": args.itl_ms / 1e3,
                    "warmup_s": args.warmup,
                    "duration_s": args.duration,
                    "targets": [["127.0.0.1", p] for p in load.ports]
                    if stack is None
                    else [["127.0.0.1", stack.port]],
                    "proxy_pids": [] if stack is None else stack.pids,
                    "side_pids": [stack.scheduler.pid] if stack and stack.scheduler else [],
                }
                result = load.phase(cmd)
                rows.append({"streams": c, "rep": rep, "path": path, **result})
                r = rows[-1]
                print(
                    f"  C={c:4d} rep={rep} {path:7s} ttft p50 {r['ttft_ms']['p50']:.2f} ms"
                    f"  tok/s {r['tokens_per_s']:.0f}  workers cpu"
                    f" {100 * r['proxy_cpu_frac']:.0f}%  us/tok {r['proxy_cpu_us_per_token']:.1f}"
                    f"  scheduler cpu {r['side_cpu_s']:.2f}s  errors {r['errors']}",
                    flush=True,
                )
                time.sleep(args.settle)
    return rows


def _med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return round(statistics.median(values), 3) if values else float("nan")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in sorted({r["streams"] for r in rows}):
        reps: dict[int, dict[str, dict[str, Any]]] = {}
        for r in rows:
            if r["streams"] == c:
                reps.setdefault(r["rep"], {})[r["path"]] = r
        runs = list(reps.values())
        row: dict[str, Any] = {"streams": c, "reps": len(runs)}
        row["direct_ttft_p50_ms"] = _med([x["direct"]["ttft_ms"]["p50"] for x in runs])
        for path in PATHS:
            if not all(path in x for x in runs):
                continue
            ps = [x[path] for x in runs]
            row[f"{path}_added_ttft_p50_ms"] = _med(
                [x[path]["ttft_ms"]["p50"] - x["direct"]["ttft_ms"]["p50"] for x in runs]
            )
            row[f"{path}_added_ttft_p99_ms"] = _med(
                [x[path]["ttft_ms"]["p99"] - x["direct"]["ttft_ms"]["p99"] for x in runs]
            )
            row[f"{path}_added_gap_p99_ms"] = _med(
                [x[path]["gap_ms"]["p99"] - x["direct"]["gap_ms"]["p99"] for x in runs]
            )
            row[f"{path}_tokens_per_s"] = _med([p["tokens_per_s"] for p in ps])
            row[f"{path}_us_per_token"] = _med([p["proxy_cpu_us_per_token"] for p in ps])
            row[f"{path}_tokens_per_worker_cpu_s"] = _med(
                [p["tokens"] / (p["proxy_cpu_frac"] * p["wall_s"]) for p in ps]
            )
            row[f"{path}_scheduler_us_per_request"] = _med(
                [1e6 * p["side_cpu_s"] / max(1, p["streams_per_s"] * p["wall_s"]) for p in ps]
            )
            row[f"{path}_errors"] = sum(p["errors"] for p in ps)
        if all("split1" in x and "proxy" in x for x in runs):
            row["hop_added_ttft_p50_ms"] = _med(
                [x["split1"]["ttft_ms"]["p50"] - x["proxy"]["ttft_ms"]["p50"] for x in runs]
            )
        for path in ("split1", "split2"):
            if f"{path}_tokens_per_worker_cpu_s" in row and "proxy_tokens_per_worker_cpu_s" in row:
                row[f"{path}_efficiency_vs_proxy"] = round(
                    row[f"{path}_tokens_per_worker_cpu_s"] / row["proxy_tokens_per_worker_cpu_s"], 3
                )
        out.append(row)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    head = [
        "C",
        "path",
        "+TTFT p50",
        "+TTFT p99",
        "+gap p99",
        "tok/s",
        "us/tok (workers)",
        "tok per worker CPU-s",
        "vs proxy",
        "sched us/req",
    ]
    print(" | ".join(head))
    for s in summary:
        for path in PATHS:
            if f"{path}_us_per_token" not in s:
                continue
            eff = s.get(f"{path}_efficiency_vs_proxy", 1.0 if path == "proxy" else None)
            sched = s[f"{path}_scheduler_us_per_request"] if path != "proxy" else None
            cells = [
                str(s["streams"]),
                path,
                f"{s[f'{path}_added_ttft_p50_ms']:+.2f}",
                f"{s[f'{path}_added_ttft_p99_ms']:+.2f}",
                f"{s[f'{path}_added_gap_p99_ms']:+.2f}",
                f"{s[f'{path}_tokens_per_s']:.0f}",
                f"{s[f'{path}_us_per_token']:.1f}",
                f"{s[f'{path}_tokens_per_worker_cpu_s']:.0f}",
                "-" if eff is None else f"{eff:.2f}",
                "-" if sched is None else f"{sched:.0f}",
            ]
            print(" | ".join(cells))
        if "hop_added_ttft_p50_ms" in s:
            print(
                f"   C={s['streams']}: scheduler hop adds {s['hop_added_ttft_p50_ms']:+.2f} ms"
                " to TTFT p50 (split1 - proxy, paired)"
            )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=lambda t: [int(x) for x in t.split(",")], default=[64, 256])
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--prefill-ms", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--policy", default="least_loaded")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="scaleout_overhead.json")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    noise = idle_noise(3.0)
    print(f"idle CPU busy per core before the run (other tenants): {noise}%", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        load = LoadProcess(backends=2, cpu=0)
        config = tmp / "proxy.yaml"
        config.write_text(proxy_config(load.ports, args.policy))
        stacks: dict[str, Stack] = {}
        try:
            stacks["proxy"] = Stack("proxy", config, 0, 1, tmp)
            stacks["split1"] = Stack("split1", config, 1, 1, tmp)
            stacks["split2"] = Stack("split2", config, 2, 1, tmp)
            time.sleep(2.0)  # workers connect to their schedulers
            rows = run(args, load, stacks)
        finally:
            for stack in stacks.values():
                stack.stop()
            load.stop()
    summary = summarize(rows)
    print()
    print_table(summary)
    result = {
        "config": vars(args),
        "cpus": os.cpu_count(),
        "idle_noise_pct": noise,
        "noise_after_pct": idle_noise(3.0),
        "summary": summary,
        "runs": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
