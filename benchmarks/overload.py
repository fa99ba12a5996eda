"""Overload that keeps goodput: proxy + emulated engines at 1x, 2x and 3x load.

Three emulated engines (``configs/paper-3xa100.yaml`` by default: 2 LP + 1 HP under
``ascendra``) behind ``ascendra-proxy serve``, driven by ``loadgen run`` with a trace
re-timed to ``k x --base-rate`` for each load ``k``.  While the load runs, a prober asks
``/health`` every 20 ms and ``/metrics`` every 0.5 s (latency of each answer; a probe that
fails or times out counts as 5 s), and the proxy's resident memory is sampled every
0.5 s.  Each ``--on-late`` mode (``refuse``: the default SLO class opts in to refusal, so
a request that cannot meet its TTFT anywhere gets a 429 at once; ``keep``: it is served
late, as before admission control existed) gets a fresh stack.

    .venv/bin/python benchmarks/overload.py --base-rate 18 --loads 1,2,3 \\
        --num-requests 300 --time-scale 3 --slo-ttft 1.0 --slo-tbt 0.15

SLOs and rates are given for the unscaled engine; ``--time-scale`` slows the emulated GPU
(step times x scale) and the benchmark scales SLOs up and rates down by the same factor,
so ``--time-scale 3`` with 1.0 s / 0.15 s is the 3 s / 0.45 s the live numbers use.
Prints one table and writes JSON (``--out``), and each point's loadgen results (per-request
records) under the directory named like ``--out`` without its suffix.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from sim_agreement import (  # noqa: E402
    emulator_args,
    free_port,
    proxy_yaml,
    scaled_profile,
    wait_ready,
    with_profile,
)

from ascendra_proxy.emulator.process import emulator_process  # noqa: E402
from ascendra_proxy.sim.setup import SimConfig, load_sim_config  # noqa: E402
from loadgen.results import load_results, write_json  # noqa: E402

FAILED_PROBE_S = 5.0


@dataclasses.dataclass
class Probe:
    """Background sampler of /health and /metrics latency and the proxy's RSS."""

    url: str
    pid: int
    health_s: list[float] = dataclasses.field(default_factory=list)
    metrics_s: list[float] = dataclasses.field(default_factory=list)
    rss_mb: list[float] = dataclasses.field(default_factory=list)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def _get(self, path: str) -> float:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url + path, timeout=FAILED_PROBE_S) as resp:
                resp.read()
        except OSError:
            return FAILED_PROBE_S
        return time.perf_counter() - t0

    def run(self) -> None:
        last_slow = 0.0
        while not self.stop.is_set():
            self.health_s.append(self._get("/health"))
            now = time.monotonic()
            if now - last_slow >= 0.5:
                last_slow = now
                self.metrics_s.append(self._get("/metrics"))
                self.rss_mb.append(rss_mb(self.pid))
            self.stop.wait(0.02)


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@contextlib.contextmanager
def stack(cfg: SimConfig, profile: str, seed: int, work: Path) -> Iterator[tuple[str, int]]:
    """Emulators + proxy for ``cfg``; yields the proxy's URL and pid."""
    with contextlib.ExitStack() as es:
        urls = {}
        for _pool, b in cfg.proxy.backends():
            urls[b.name] = es.enter_context(emulator_process(emulator_args(b, profile, seed))).url
        port = free_port()
        path = work / "proxy.yaml"
        doc = proxy_yaml(cfg, urls, port)
        doc["limits"] = dataclasses.asdict(cfg.proxy.limits)
        path.write_text(yaml.safe_dump(doc))
        cmd = [sys.executable, "-m", "ascendra_proxy.cli", "serve", "--config", str(path)]
        proxy = subprocess.Popen([*cmd, "--log-level", "ERROR"])
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, timeout=120.0)  # a loaded machine starts slowly
            yield url, proxy.pid
        finally:
            proxy.terminate()
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()


def load_point(args: argparse.Namespace, url: str, pid: int, rate: float, out: Path) -> Any:
    cmd = [
        sys.executable,
        "-m",
        "loadgen.cli",
        "run",
        "--url",
        url,
        "--model",
        args.model,
        "--trace",
        str(Path(args.trace).resolve()),
        "--num-requests",
        str(args.num_requests),
        "--rate",
        str(rate),
        "--slo-ttft",
        str(args.slo_ttft * args.time_scale),
        "--slo-tbt",
        str(args.slo_tbt * args.time_scale),
        "--seed",
        str(args.seed),
        "--tokenizer",
        "emulator",
        "--no-progress",
        "--out",
        str(out),
    ]
    probe = Probe(url, pid)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    finally:
        probe.stop.set()
        thread.join()
    s = load_results(out)["summary"]
    return {
        "offered_rps": rate,
        "goodput_rps": s["goodput_rps"],
        "slo_attainment": s["slo_attainment"],
        "completed": s["completed"],
        "failed": s["failed"],
        "shed": s.get("shed", 0),
        "rss_mb_max": max(probe.rss_mb, default=float("nan")),
        "health_p50_ms": 1000 * quantile(probe.health_s, 0.5),
        "health_p99_ms": 1000 * quantile(probe.health_s, 0.99),
        "metrics_p99_ms": 1000 * quantile(probe.metrics_s, 0.99),
        "health_probes": len(probe.health_s),
    }


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


def configured(base: SimConfig, on_late: str, profile: str, args: argparse.Namespace) -> SimConfig:
    p = base.proxy
    slo = dataclasses.replace(p.slo, default=dataclasses.replace(p.slo.default, on_late=on_late))
    proxy = dataclasses.replace(p, slo=slo)
    return with_profile(dataclasses.replace(base, proxy=proxy), profile)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mode':<7}{'load':>5}{'offered':>9}{'goodput':>9}{'attain':>8}{'shed':>6}"
        f"{'failed':>7}{'RSS MB':>8}{'health p50':>11}{'p99 ms':>8}{'metrics p99':>12}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['mode']:<7}{r['load']:>4}x{r['offered_rps']:>9.2f}{r['goodput_rps']:>9.2f}"
            f"{100 * r['slo_attainment']:>7.1f}%{r['shed']:>6}{r['failed']:>7}"
            f"{r['rss_mb_max']:>8.0f}{r['health_p50_ms']:>11.1f}{r['health_p99_ms']:>8.1f}"
            f"{r['metrics_p99_ms']:>12.1f}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "paper-3xa100.yaml"))
    ap.add_argument(
        "--trace",
        default="../shared/data/traces/splitwise_conv.csv",
        help="trace file (relative to the current directory)",
    )
    ap.add_argument("--base-rate", type=float, default=18.0, help="1x load, req/s (unscaled)")
    ap.add_argument("--loads", default="1,2,3")
    ap.add_argument("--modes", default="refuse,keep", help="on_late of the default class")
    ap.add_argument("--num-requests", type=int, default=300)
    ap.add_argument("--slo-ttft", type=float, default=1.0)
    ap.add_argument("--slo-tbt", type=float, default=0.15)
    ap.add_argument("--time-scale", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "overload.json"))
    args = ap.parse_args()
    base = load_sim_config(args.config)
    args.model = base.proxy.backends()[0][1].model
    loads = [float(x) for x in args.loads.split(",")]
    rows: list[dict[str, Any]] = []
    runs = Path(args.out).with_suffix("")  # each point's loadgen results file goes here
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        name = base.proxy.backends()[0][1].engine_settings.profile or ""
        profile = scaled_profile(name, args.time_scale, work)
        for mode in args.modes.split(","):
            cfg = configured(base, mode, profile, args)
            for k in loads:
                with stack(cfg, profile, args.seed, work) as (url, pid):
                    rate = k * args.base_rate / args.time_scale
                    point = load_point(args, url, pid, rate, runs / f"{mode}-{k:g}x.json")
                rows.append({"mode": mode, "load": k, **point})
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    for mode in args.modes.split(","):
        mine = {r["load"]: r for r in rows if r["mode"] == mode}
        if 1.0 in mine and max(loads) in mine and mine[1.0]["goodput_rps"]:
            ratio = mine[max(loads)]["goodput_rps"] / mine[1.0]["goodput_rps"]
            print(f"{mode}: goodput at {max(loads):g}x / 1x = {ratio:.2f}")
    write_json(args.out, {"args": vars(args), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
