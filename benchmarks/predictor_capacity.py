"""The Ascendra policy's capacity in the simulator: analytical vs learned slack predictor.

Runs the same workload (same seed: same lengths, SLO classes and arrival pattern, re-timed
per rate) through the simulator at each rate, once with the policy's own analytical
predictor and once per ``--model`` with the learned one (``load_predictor`` with the
analytical model as fallback), and reports SLO attainment (completed, TTFT and mean TBT
within SLO) per rate, offloads, and the capacity: the rate at which attainment crosses
90% (linear interpolation, as loadgen's sweeps do).  Prints a table and writes JSON.

``--proposed-fields`` adds, per model, a run in which the batches carry the inputs the
policy does not pass yet (``QueryBatch.on_backend_s`` / ``slo_ttft_s``,
``BackendFeatures.oldest_unstarted_s`` / ``last_first_token_s``; see the predictor
package notes), filled in from the simulator's request states by :class:`ProposedFields`
(rows are matched to requests by prompt length and arrival time): what the learned model
would do for the policy once it passes them.

    .venv/bin/python benchmarks/predictor_capacity.py --model model.json \\
        --workload azure-conv --rates 24,28,32,36,40 --requests 1500 --out capacity.json
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ascendra_proxy.core.policies.ascendra import AscendraParams
from ascendra_proxy.core.predict import (
    BackendFeatures,
    FloatArray,
    Prediction,
    PredictorSource,
    QueryBatch,
    SlackPredictor,
)
from ascendra_proxy.predictor.model import load_predictor
from ascendra_proxy.predictor.train import analytical_for
from ascendra_proxy.sim.setup import load_sim_config, with_policy
from ascendra_proxy.sim.simulator import Simulator
from loadgen.arrivals import ArrivalSpec
from loadgen.metrics import attained, capacity_at
from loadgen.workloads import WorkloadSpec, build_workload, parse_slo_mix

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paper-3xa100.yaml"


@dataclass(frozen=True, slots=True)
class TimedBackend(BackendFeatures):
    oldest_unstarted_s: float | None = None
    last_first_token_s: float | None = None


@dataclass(frozen=True, slots=True)
class TimedBatch(QueryBatch):
    on_backend_s: FloatArray | None = None
    slo_ttft_s: FloatArray | None = None


class ProposedFields:
    """A predictor wrapper that fills the proposed batch fields from the simulator."""

    def __init__(self, inner: SlackPredictor, sim: Simulator) -> None:
        self.inner = inner
        self.sim = sim
        self.now = 0.0
        self.rows = 0
        self.matched = 0
        tick = sim.proxy.tick

        def tick_hook(now: float) -> None:
            self.now = now
            tick(now)

        sim.proxy.tick = tick_hook  # type: ignore[method-assign]

    @property
    def source(self) -> PredictorSource:
        return self.inner.source

    def predict(self, batch: QueryBatch) -> Prediction:
        return self.inner.predict(self.enrich(batch))

    def enrich(self, batch: QueryBatch) -> TimedBatch:
        now = self.now
        states = [f.state for f in self.sim.proxy.flights.values()]
        by_key = {(r.prompt_tokens, round(r.arrival, 6)): r for r in states}
        oldest: dict[str, float] = {}
        last: dict[str, float] = {}
        for r in states:
            if r.backend is None:
                continue
            if r.first_token_at is None and r.dispatched_at is not None:
                oldest[r.backend] = min(oldest.get(r.backend, now), r.dispatched_at)
            elif r.first_token_at is not None:
                last[r.backend] = max(last.get(r.backend, -1e18), r.first_token_at)
        backends = tuple(
            TimedBackend(
                **asdict(b),
                oldest_unstarted_s=now - oldest.get(b.name, now),
                last_first_token_s=(now - last[b.name]) if b.name in last else None,
            )
            for b in batch.backends
        )
        self.rows += len(batch)
        on_backend = np.zeros(len(batch))
        slo = np.full(len(batch), np.nan)
        for i in range(len(batch)):
            arrival = round(now - float(batch.waited_s[i]), 6)
            found = by_key.get((int(batch.prompt_tokens[i]), arrival))
            if found is None:
                continue
            self.matched += 1
            slo[i] = found.slo.ttft_s
            b = batch.backends[int(batch.backend_index[i])]
            if found.backend == b.name and found.dispatched_at is not None:
                on_backend[i] = now - found.dispatched_at
        fields_ = {f.name: getattr(batch, f.name) for f in fields(QueryBatch)}
        fields_["backends"] = backends
        return TimedBatch(**fields_, on_backend_s=on_backend, slo_ttft_s=slo)


def one_point(
    args: argparse.Namespace, model: str | None, rate: float, proposed: bool
) -> dict[str, object]:
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
    sim = Simulator(cfg, build_workload(spec), seed=args.seed)
    wrapped = None
    if predictor is not None:
        wrapped = ProposedFields(predictor, sim) if proposed else None
        sim.policy.use_predictor(wrapped or predictor)  # type: ignore[attr-defined]
    res = sim.run()
    records = res.records
    matched = None if wrapped is None else round(wrapped.matched / max(wrapped.rows, 1), 4)
    return {
        "rows_matched": matched,
        "predictor": variant_name(model, proposed),
        "source": res.policy.predictor_source,  # type: ignore[attr-defined]
        "rate": rate,
        "attainment": round(sum(attained(r) for r in records) / len(records), 4),
        "offloads": sum(res.tally.offloads.values()),
        "migrations": sum(res.tally.migrations.values()),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def variant_name(model: str | None, proposed: bool) -> str:
    if model is None:
        return "analytical"
    return f"{Path(model).name}{' +fields' if proposed else ''}"


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
    ap.add_argument(
        "--proposed-fields",
        action="store_true",
        help="also run each model with the batch fields the policy does not pass yet",
    )
    ap.add_argument("--out", default="predictor_capacity.json")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    variants: list[tuple[str | None, bool]] = [(None, False)]
    for m in args.model:
        variants.append((m, False))
        if args.proposed_fields:
            variants.append((m, True))
    jobs = [(args, m, r, p) for m, p in variants for r in rates]
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        points = list(pool.map(one_point, *zip(*jobs, strict=True)))
    print(f"{args.workload}, {args.requests} requests, seed {args.seed}, SLO mix {args.slo_mix}")
    print(f"{'predictor':<28} {'rate':>6} {'attained':>9} {'offloads':>9} {'migr.':>6}")
    summary = []
    for m, proposed in variants:
        name = variant_name(m, proposed)
        mine = [p for p in points if p["predictor"] == name]
        for p in mine:
            print(
                f"{name:<28} {p['rate']:>6g} {p['attainment']:>9.3f}"
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
