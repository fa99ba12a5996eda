"""Does the simulator agree with the real-time system?  Proxy + emulators vs simulator.

For each policy, the same config (``configs/paper-3xa100.yaml`` by default: three emulated
A100 / Llama-3-8B engines) and the same workload (a trace slice re-timed to ``--rate``,
same seed) run twice: in real time, through ``ascendra-proxy serve`` in front of three
``ascendra-proxy emulate`` processes driven by ``loadgen run``, and in virtual time through
``ascendra-proxy simulate``'s machinery.  The check: SLO attainment within 3 points, TTFT
and mean-TBT p50/p90 within 10%.  Prints both sides and writes JSON.

    .venv/bin/python benchmarks/sim_agreement.py --policy round_robin --policy ascendra \\
        --rate 16 --num-requests 300

Everything binds to 127.0.0.1 on free ports and every child process is stopped at the end.
The machine's CPU is shared by the emulators, the proxy and the load generator (and anything
else running): ``--time-scale`` > 1 slows the emulated GPU (the emulators then run a profile
whose step times are multiplied, and the simulator runs the same profile), which lowers the
CPU load per second when the real-time side lags.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ascendra_proxy.demo.stack import scaled_profile  # noqa: E402
from ascendra_proxy.emulator.process import emulator_process  # noqa: E402
from ascendra_proxy.sim.report import run_document  # noqa: E402
from ascendra_proxy.sim.setup import SimConfig, load_sim_config, with_policy  # noqa: E402
from ascendra_proxy.sim.simulator import Simulator  # noqa: E402
from loadgen.arrivals import ArrivalSpec  # noqa: E402
from loadgen.results import load_results, write_json  # noqa: E402
from loadgen.workloads import SloClass, WorkloadSpec, build_workload  # noqa: E402

TRACES = REPO.parent / "shared" / "data" / "traces"
METRICS = ("slo_attainment", "ttft_p50", "ttft_p90", "tbt_mean_p50", "tbt_mean_p90")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def emulator_args(b: Any, profile: str, seed: int) -> list[str]:
    s = b.engine_settings
    args = [
        "--flavor",
        b.engine,
        "--profile",
        profile,
        "--model",
        b.model,
        "--seed",
        str(seed),
        "--scheduling-policy",
        s.scheduling_policy,
        "--max-num-seqs",
        str(s.max_num_seqs),
        "--max-num-batched-tokens",
        str(s.max_num_batched_tokens),
        "--block-size",
        str(s.block_size),
        "--max-model-len",
        str(s.max_model_len),
    ]
    if s.num_gpu_blocks is not None:
        args += ["--num-gpu-blocks", str(s.num_gpu_blocks)]
    if not s.enable_prefix_caching:
        args.append("--no-prefix-caching")
    return args


def proxy_yaml(cfg: SimConfig, urls: dict[str, str], port: int) -> dict[str, Any]:
    """The live proxy's config: the simulated one with the emulators' URLs."""
    p = cfg.proxy
    pools = []
    for pool in p.pools:
        backends = []
        for b in pool.backends:
            es = {k: v for k, v in dataclasses.asdict(b.engine_settings).items() if v is not None}
            backends.append(
                {
                    "name": b.name,
                    "url": urls[b.name],
                    "engine": b.engine,
                    "model": b.model,
                    "engine_settings": es,
                }
            )
        pools.append({"name": pool.name, "role": pool.role, "backends": backends})
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "pools": pools,
        "slo": {"default": dataclasses.asdict(p.slo.default)},
        "scrape": dataclasses.asdict(p.scrape),
        "policy": {"type": p.policy.type, **dataclasses.asdict(p.policy.params)},  # type: ignore[call-overload]
    }


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/v1/models", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready within {timeout} s")


@contextlib.contextmanager
def live_stack(cfg: SimConfig, profile: str, seed: int, work: Path) -> Iterator[str]:
    """Emulators + proxy for ``cfg``; yields the proxy's base URL."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for _pool, b in cfg.proxy.backends():
            emu = stack.enter_context(emulator_process(emulator_args(b, profile, seed)))
            urls[b.name] = emu.url
        port = free_port()
        path = work / f"proxy-{cfg.proxy.policy.type}.yaml"
        path.write_text(yaml.safe_dump(proxy_yaml(cfg, urls, port)))
        cmd = [
            sys.executable,
            "-m",
            "ascendra_proxy.cli",
            "serve",
            "--config",
            str(path),
            "--log-level",
            "WARNING",
        ]
        proxy = subprocess.Popen(cmd)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            yield url
        finally:
            proxy.terminate()
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()


def with_profile(cfg: SimConfig, profile: str) -> SimConfig:
    pools = tuple(
        dataclasses.replace(
            pool,
            backends=tuple(
                dataclasses.replace(
                    b, engine_settings=dataclasses.replace(b.engine_settings, profile=profile)
                )
                for b in pool.backends
            ),
        )
        for pool in cfg.proxy.pools
    )
    return dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, pools=pools))


def live_run(args: argparse.Namespace, url: str, model: str, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "loadgen.cli",
        "run",
        "--url",
        url,
        "--model",
        model,
        "--trace",
        str(args.trace_path),
        "--num-requests",
        str(args.num_requests),
        "--rate",
        str(args.rate),
        "--slo-ttft",
        str(args.slo_ttft),
        "--slo-tbt",
        str(args.slo_tbt),
        "--seed",
        str(args.seed),
        "--tokenizer",
        "emulator",
        "--no-progress",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return load_results(out)


def sim_run(args: argparse.Namespace, cfg: SimConfig) -> dict[str, Any]:
    spec = WorkloadSpec(
        num_requests=args.num_requests,
        arrivals=ArrivalSpec("trace", args.rate),
        slo_classes=(SloClass(args.slo_ttft, args.slo_tbt),),
        trace=str(args.trace_path),
        seed=args.seed,
    )
    result = Simulator(cfg, build_workload(spec), seed=args.seed).run()
    return run_document(result, {"label": "simulated"}, args.rate, keep_requests=True)


def compare(live: dict[str, Any], sim: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for k in METRICS:
        a, b = live["summary"].get(k), sim["summary"].get(k)
        if a is None or b is None:
            rows[k] = {"live": a, "sim": b, "ok": False}
            continue
        if k == "slo_attainment":
            diff, ok = (b - a) * 100, abs(b - a) <= 0.03
        else:
            diff = (b - a) / a * 100 if a else float("inf")
            ok = abs(diff) <= 10
        rows[k] = {"live": a, "sim": b, "diff": diff, "ok": ok}
    extra = {
        k: (live["summary"].get(k), sim["summary"].get(k))
        for k in ("completed", "failed", "ttft_attainment", "tbt_attainment", "offloads")
    }
    return {"metrics": rows, "also": extra, "agree": all(r["ok"] for r in rows.values())}


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.1f}%" if metric == "slo_attainment" else f"{v * 1000:.0f} ms"


def format_comparison(name: str, c: dict[str, Any]) -> str:
    lines = [
        f"{name}: {'AGREE' if c['agree'] else 'DISAGREE'}",
        f"  {'metric':<16}{'live':>10}{'sim':>10}{'diff':>10}",
    ]
    for k, r in c["metrics"].items():
        unit = " pt" if k == "slo_attainment" else "%"
        diff = f"{r['diff']:+.1f}{unit}" if "diff" in r else "-"
        flag = "" if r["ok"] else "  <-"
        lines.append(f"  {k:<16}{_fmt(k, r['live']):>10}{_fmt(k, r['sim']):>10}{diff:>10}{flag}")
    lines.append("  also (live, sim): " + ", ".join(f"{k} {v}" for k, v in c["also"].items()))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "paper-3xa100.yaml"))
    ap.add_argument("--policy", action="append", default=[])
    ap.add_argument("--trace", default="splitwise_conv.csv", help="file under ../shared traces")
    ap.add_argument("--rate", type=float, default=16.0)
    ap.add_argument("--num-requests", type=int, default=300)
    ap.add_argument("--slo-ttft", type=float, default=1.0)
    ap.add_argument("--slo-tbt", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-scale", type=float, default=1.0, help="slow the emulated GPU")
    ap.add_argument(
        "--sim-network-ms",
        type=float,
        help="one-way proxy<->engine hop of the simulated side (default: the config's); "
        "the live stack's hops on this machine measure about 2.5 ms (idle probe, see README)",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sim_agreement.json"))
    args = ap.parse_args()
    args.trace_path = TRACES / args.trace
    base = load_sim_config(args.config)
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "policies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profile_name = base.proxy.backends()[0][1].engine_settings.profile or ""
        profile = scaled_profile(profile_name, args.time_scale, work)
        if args.time_scale != 1.0:
            args.rate /= args.time_scale
            args.slo_ttft *= args.time_scale
            args.slo_tbt *= args.time_scale
        for name in args.policy or [base.proxy.policy.type]:
            cfg = with_profile(with_policy(base, name), profile)
            model = cfg.proxy.backends()[0][1].model
            t0 = time.perf_counter()
            out = Path(args.out)
            with live_stack(cfg, profile, args.seed, work) as url:
                live = live_run(args, url, model, out.with_name(f"{out.stem}.live-{name}.json"))
            wall = time.perf_counter() - t0
            if args.sim_network_ms is not None:
                hop = dataclasses.replace(cfg.sim, network_s=args.sim_network_ms / 1000.0)
                cfg = dataclasses.replace(cfg, sim=hop)
            sim = sim_run(args, cfg)
            write_json(out.with_name(f"{out.stem}.sim-{name}.json"), sim)
            c = compare(live, sim)
            c["live_wall_s"] = round(wall, 1)
            report["policies"][name] = c
            print(format_comparison(name, c), flush=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all(c["agree"] for c in report["policies"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
