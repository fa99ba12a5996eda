"""The Ascendra policy's capacity in the simulator: analytical vs learned slack predictor.

Runs the same workload (same seed: same lengths, SLO classes and arrival pattern, re-timed
per rate) through the simulator at each rate, once with the policy's own analytical
predictor and once per ``--model`` with the learned one (``load_predictor`` with the
analytical model as fallback), and reports SLO attainment (completed, TTFT and mean TBT
within SLO) per rate, offloads, and the capacity: the rate at which attainment crosses
90% (linear interpolation, as loadgen's sweeps do).  Prints a table and writes JSON.

    .venv/bin/python benchmarks/predictor_capacity.py --model model.json \\
        --workload azure-conv --rates 24,28,32,36,40 --requests 1500 --out capacity.json
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ascendra_proxy.core.policies.ascendra import AscendraParams
from ascendra_proxy.predictor.model import load_predictor
from ascendra_proxy.predictor.train import analytical_for
from ascendra_proxy.sim.setup import load_sim_config, with_policy
from ascendra_proxy.sim.simulator import Simulator
from loadgen.arrivals import ArrivalSpec
from loadgen.metrics import attained, capacity_at
from loadgen.workloads import WorkloadSpec, build_workload, parse_slo_mix

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paper-3xa100.yaml"


def one_point(args: argparse.Namespace, model: str | None, rate: float) -> dict[str, object]:
    cfg = with_policy(load_sim_config(args.config), "ascendra")
    params = cfg.proxy.policy.params
    assert isinstance(params, AscendraParams)
    profiles = sorted({b.engine_settings.profile or "" for _p, b in cfg.proxy.backends()})
    fallback = analytical_for(
        profiles,
        fallback_step_s=params.fallback_step_s,
        max_scrape_age_s=params.max_scrape_age_s,
    )
    predictor = None if model is None else load_predictor(model, fallback, watch=False)
    spec = WorkloadSpec(
        num_requests=args.requests,
        arrivals=ArrivalSpec(args.arrivals, rate),
        slo_classes=parse_slo_mix(args.slo_mix),
        workload=args.workload,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    res = Simulator(cfg, build_workload(spec), seed=args.seed, predictor=predictor).run()
    records = res.records
    return {
        "predictor": "analytical" if model is None else model,
        "source": res.policy.predictor_source,  # type: ignore[attr-defined]
        "rate": rate,
        "attainment": round(sum(attained(r) for r in records) / len(records), 4),
        "offloads": sum(res.tally.offloads.values()),
        "migrations": sum(res.tally.migrations.values()),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="learned model file(s)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--workload", default="azure-conv")
    ap.add_argument("--arrivals", default="poisson")
    ap.add_argument("--rates", default="24,28,32,36,40")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--slo-mix", default="1.0:0.15:1")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="predictor_capacity.json")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    variants: list[str | None] = [None, *args.model]
    jobs = [(args, m, r) for m in variants for r in rates]
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        points = list(pool.map(one_point, *zip(*jobs, strict=True)))
    print(f"{args.workload}, {args.requests} requests, seed {args.seed}, SLO mix {args.slo_mix}")
    print(f"{'predictor':<28} {'rate':>6} {'attained':>9} {'offloads':>9} {'migr.':>6}")
    summary = []
    for m in variants:
        name = "analytical" if m is None else m
        mine = [p for p in points if p["predictor"] == name]
        for p in mine:
            print(
                f"{Path(name).name:<28} {p['rate']:>6g} {p['attainment']:>9.3f}"
                f" {p['offloads']:>9} {p['migrations']:>6}"
            )
        cap = capacity_at([(float(p["rate"]), float(p["attainment"])) for p in mine])  # type: ignore[arg-type]
        summary.append({"predictor": name, "capacity_rps": cap.rps, "status": cap.status})
        shown = f"{cap.rps:.2f} req/s" if cap.rps is not None else f"{cap.status} ({cap.bound})"
        print(f"{'':<28} capacity at 90%: {shown}")
    out = {"args": vars(args), "points": points, "capacity": summary}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
