"""Training data for the slack predictor from the simulator under mixed load.

Runs the simulator (the same engine model the emulator serves) over a grid of policies,
workloads (loadgen's fitted ``azure-conv`` / ``azure-code``), arrival rates and arrival
shapes, with a :class:`~ascendra_proxy.predictor.dataset.TrainingRecorder` attached, and
writes one JSONL file per run (``<policy>-<workload>-<arrivals>-r<rate>-s<seed>.jsonl``) so
that a held-out set can be whole runs.  Prints a table and writes ``summary.json``.

    .venv/bin/python benchmarks/predictor_data.py --out /tmp/pred-data \\
        --requests 1000 --workloads azure-conv=8,13,18 azure-code=4,7,10 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ascendra_proxy.predictor.simtap import record_to_file
from ascendra_proxy.sim.setup import load_sim_config, with_policy
from ascendra_proxy.sim.simulator import Simulator
from loadgen.arrivals import ArrivalSpec
from loadgen.workloads import WorkloadSpec, build_workload, parse_slo_mix

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paper-3xa100.yaml"


@dataclass(frozen=True)
class Run:
    config: str
    policy: str
    workload: str
    arrivals: str  # "poisson" or "gamma<burstiness>"
    rate: float
    seed: int
    requests: int
    slo_mix: str
    out: str

    @property
    def name(self) -> str:
        return f"{self.policy}-{self.workload}-{self.arrivals}-r{self.rate:g}-s{self.seed}"


def _arrivals(kind: str, rate: float) -> ArrivalSpec:
    if kind.startswith("gamma"):
        return ArrivalSpec("gamma", rate, burstiness=float(kind[5:] or 0.5))
    return ArrivalSpec(kind, rate)


def run_one(run: Run) -> dict[str, object]:
    cfg = with_policy(load_sim_config(run.config), run.policy)
    spec = WorkloadSpec(
        num_requests=run.requests,
        arrivals=_arrivals(run.arrivals, run.rate),
        slo_classes=parse_slo_mix(run.slo_mix),
        workload=run.workload,
        seed=run.seed,
    )
    path = Path(run.out) / f"{run.name}.jsonl"
    path.unlink(missing_ok=True)
    sim = Simulator(cfg, build_workload(spec), seed=run.seed)
    rec = record_to_file(sim, path, run.name, max_bytes=1 << 34)
    t0 = time.perf_counter()
    res = sim.run()
    rec.flush()
    met = sum(1 for f in res.flights if f.state.slo_met) / len(res.flights)
    return {
        "run": run.name,
        "file": str(path),
        "rows": rec.rows_labelled,
        "censored": rec.rows_censored,
        "slo_attainment": round(met, 4),
        "offloads": sum(res.tally.offloads.values()),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--policies", default="ascendra,round_robin,least_loaded")
    ap.add_argument(
        "--workloads",
        nargs="+",
        default=["azure-conv=8,13,18", "azure-code=4,7,10"],
        help="WORKLOAD=RATE,RATE... (requests per second)",
    )
    ap.add_argument("--arrivals", default="poisson,gamma0.5")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--slo-mix", default="1.0:0.15:0.7,2.0:0.2:0.3")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    grid = [(w, float(r)) for spec in args.workloads for w, rates in [spec.split("=")]
            for r in rates.split(",")]  # fmt: skip
    runs = [
        Run(args.config, p, w, a, r, int(s), args.requests, args.slo_mix, args.out)
        for s in args.seeds.split(",")
        for w, r in grid
        for a in args.arrivals.split(",")
        for p in args.policies.split(",")
    ]
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        results = list(pool.map(run_one, runs))
    print(f"{'run':<48} {'rows':>7} {'censored':>8} {'SLO met':>8} {'offloads':>8} {'wall s':>7}")
    for r in results:
        print(
            f"{r['run']:<48} {r['rows']:>7} {r['censored']:>8} {r['slo_attainment']:>8}"
            f" {r['offloads']:>8} {r['wall_s']:>7}"
        )
    summary = {"args": vars(args), "runs": results}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
