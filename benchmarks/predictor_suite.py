"""Learned vs analytical slack predictor on the capacity suite's workloads, in one run.

Per workload (the suite's names, each on its own engine config): record training rows from
the ``ascendra`` policy with its analytical predictor on one trace window (``--train-window``,
at ``--train-rate``), train a LightGBM quantile model on them (what ``ascendra-proxy train``
does), then on another window (``--eval-window``: other requests and bursts) run the policy
at every rate of ``--rates`` twice, once per predictor, same engines and settings.  Prints
capacity at 90% SLO attainment (linear interpolation between the rates) side by side and
writes JSON (points, capacities, training reports).

    .venv/bin/python benchmarks/predictor_suite.py \\
        --workloads conv,mooncake-synthetic,three-tier --requests-scale 0.5 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from capacity_suite import SUITE, config_of, window_items  # noqa: E402

from ascendra_proxy.predictor.model import LearnedPredictor  # noqa: E402
from ascendra_proxy.predictor.rows import read_rows  # noqa: E402
from ascendra_proxy.predictor.setup import analytical_fallback  # noqa: E402
from ascendra_proxy.predictor.simtap import record_to_file  # noqa: E402
from ascendra_proxy.predictor.train import train  # noqa: E402
from ascendra_proxy.sim.setup import load_sim_config, with_policy  # noqa: E402
from ascendra_proxy.sim.simulator import Simulator  # noqa: E402
from ascendra_proxy.sim.sweep import run_jobs  # noqa: E402
from loadgen.metrics import attained, capacity_at  # noqa: E402

# Eval rates bracketing each workload's ascendra capacity on window 1 at half the suite's
# requests (conv's and three-tier's window 1 is burstier than the suite's median window).
DEFAULT_RATES = {
    "conv": (18.0, 21.0, 24.0, 27.0, 30.0),
    "code": (2.2, 2.6, 3.0, 3.4, 3.8),
    "three-tier": (8.0, 11.0, 14.0, 17.0, 20.0),
    "mooncake-conversation": (0.5, 0.7, 0.9, 1.1, 1.3),
    "mooncake-synthetic": (0.6, 0.8, 1.0, 1.2, 1.4),
}


@dataclass(frozen=True)
class Point:
    workload: str
    requests: int
    window: int
    rate: float
    model: str | None = None  # learned model file; None: the analytical predictor
    rows_out: str | None = None  # record training rows here


def run_point(p: Point) -> dict[str, Any]:
    """One simulated ascendra point (module level: runs in worker processes)."""
    cfg = with_policy(load_sim_config(config_of(p.workload, None)), "ascendra")
    items = window_items(p.workload, p.requests, p.window, p.rate)
    predictor = None
    if p.model is not None:
        predictor = LearnedPredictor.open(p.model, analytical_fallback(cfg.proxy))
    sim = Simulator(cfg, items, seed=p.window, predictor=predictor)
    recorder = None if p.rows_out is None else record_to_file(sim, p.rows_out, p.workload)
    t0 = time.perf_counter()
    res = sim.run()
    if recorder is not None:
        recorder.flush()
    return {
        "workload": p.workload,
        "predictor": "analytical" if p.model is None else "learned",
        "source": str(sim.policy.predictor_source),  # type: ignore[attr-defined]
        "rate": p.rate,
        "attainment": round(sum(attained(r) for r in res.records) / len(res.records), 4),
        "offloads": sum(res.tally.offloads.values()),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def parse_rates(specs: list[str], workloads: list[str]) -> dict[str, list[float]]:
    rates = {w: list(DEFAULT_RATES[w]) for w in workloads}
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in rates:
            raise SystemExit(f"--rates {spec}: {name} is not in --workloads")
        rates[name] = [float(v) for v in values.split(",")]
    return rates


def requests_of(args: argparse.Namespace, workload: str) -> int:
    return max(int(SUITE[workload].num_requests * args.requests_scale), 20)


def train_models(args: argparse.Namespace, rates: dict[str, list[float]], out: Path) -> dict:
    """Record rows on the training window, train one model per workload."""
    recs = []
    for w in args.workloads:
        rows = out / f"rows-{w}.jsonl"
        rows.unlink(missing_ok=True)
        rate = args.train_rate.get(w, rates[w][len(rates[w]) // 2])
        recs.append(Point(w, requests_of(args, w), args.train_window, rate, rows_out=str(rows)))
    recorded = run_jobs(recs, args.jobs, fn=run_point)
    reports: dict[str, Any] = {}
    for rec, doc in zip(recs, recorded, strict=True):
        assert rec.rows_out is not None
        result = train(read_rows([rec.rows_out]), quantile=0.9, seed=0, holdout=0.2)
        (out / f"model-{rec.workload}.json").write_bytes(result.model_bytes)
        reports[rec.workload] = {"recorded": doc, "report": result.report}
        held = {k: result.report[k]["ttft_mae_s"] for k in ("learned", "analytical")}
        print(
            f"{rec.workload}: {result.report['rows']['train']} rows from window {rec.window}"
            f" at {rec.rate:g} req/s; held-out TTFT MAE learned {held['learned']:.3f} s,"
            f" analytical {held['analytical']:.3f} s",
            flush=True,
        )
    return reports


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="conv,mooncake-synthetic", help="comma list")
    ap.add_argument("--rates", action="append", default=[], help="WORKLOAD=r1,r2,... (eval)")
    ap.add_argument("--train-rate", action="append", default=[], help="WORKLOAD=rate")
    ap.add_argument("--train-window", type=int, default=0)
    ap.add_argument("--eval-window", type=int, default=1)
    ap.add_argument("--requests-scale", type=float, default=0.5, help="x the suite's requests")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predictor-suite"))
    args = ap.parse_args(argv)
    args.workloads = args.workloads.split(",")
    args.train_rate = {k: float(v) for k, _, v in (s.partition("=") for s in args.train_rate)}
    if args.train_window == args.eval_window:
        raise SystemExit("--train-window and --eval-window must differ")
    rates = parse_rates(args.rates, args.workloads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reports = train_models(args, rates, out)
    points = [
        Point(w, requests_of(args, w), args.eval_window, r, m)
        for w in args.workloads
        for m in (None, str(out / f"model-{w}.json"))
        for r in rates[w]
    ]
    docs = run_jobs(points, args.jobs, fn=run_point)
    summary = print_table(args, docs)
    doc = {
        "args": {k: v for k, v in vars(args).items() if k != "out"},  # no local paths
        "rates": rates,
        "points": docs,
        "capacity": summary,
        "training": reports,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "predictor_suite.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


def print_table(args: argparse.Namespace, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    print(f"train window {args.train_window}, eval window {args.eval_window}")
    print(f"{'workload':<22} {'predictor':<11} attainment per rate -> capacity at 90%")
    summary = []
    for w in args.workloads:
        for name in ("analytical", "learned"):
            mine = [d for d in docs if d["workload"] == w and d["predictor"] == name]
            cap = capacity_at([(float(d["rate"]), float(d["attainment"])) for d in mine])
            per_rate = " ".join(f"{d['rate']:g}:{d['attainment']:.3f}" for d in mine)
            shown = f"{cap.rps:.2f}" if cap.rps is not None else f"{cap.status} ({cap.bound})"
            print(f"{w:<22} {name:<11} {per_rate} -> {shown}")
            summary.append(
                {
                    "workload": w,
                    "predictor": name,
                    "requests": requests_of(args, w),
                    "capacity_rps": cap.rps,
                    "status": cap.status,
                }
            )
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
