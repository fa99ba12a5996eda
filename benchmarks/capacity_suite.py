"""The capacity suite: every workload where placement or deadlines could decide, each policy,
median of three trace windows, against the cluster's ceiling, plus goodput under overload.

Run through ``benchmarks/capacity.py --suite`` (options: ``--help`` there).  For every
workload of :data:`WORKLOADS` and every policy (``round_robin``, ``least_loaded``,
``prefix_aware``: the baselines; ``ascendra``) on the engines of ``--config``:

1. the ceiling (:mod:`ascendra_proxy.sim.ceiling`) over the first rows of the trace (all
   windows' requests, at least ``--ceiling-requests``);
2. per policy and window ("seed" ``k`` replays trace rows ``k*n .. (k+1)*n-1``, re-timed to
   each rate, so the seeds differ in their requests and bursts), the capacity at 90%
   attainment by a bracketing search (:mod:`ascendra_proxy.sim.search`), all searches of a
   round in parallel;
3. on the overload workload, goodput (requests meeting their SLO per second of offered
   load; rejected, dropped and unfinished requests are misses) at 1.25x, 1.5x and 2x of
   round-robin's median capacity.

Prints one table, writes ``suite.json`` (every point, per-class attainment where a workload
has classes) and ``table.md``, and plots ``capacity.png`` and ``attainment_<workload>.png``
under ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from suite_report import format_table, plot_suite, table_rows

from ascendra_proxy.sim.ceiling import cluster_ceiling
from ascendra_proxy.sim.search import CapacitySearch
from ascendra_proxy.sim.setup import load_sim_config
from ascendra_proxy.sim.simulator import Simulator
from ascendra_proxy.sim.sweep import run_jobs
from loadgen.arrivals import ArrivalSpec, trace_arrivals
from loadgen.metrics import attained
from loadgen.results import write_json
from loadgen.workloads import SloClass, WorkItem, WorkloadSpec, build_workload

POLICIES = ("round_robin", "least_loaded", "prefix_aware", "ascendra")
BASELINES = ("round_robin", "least_loaded", "prefix_aware")
OVERLOAD = (1.25, 1.5, 2.0)


@dataclass(frozen=True)
class SuiteWorkload:
    name: str
    trace: str  # file under the traces folder
    classes: tuple[tuple[str, SloClass], ...]
    start_fraction: float  # first rate of every search, as a share of the ceiling
    about: str


def _three_tier() -> tuple[tuple[str, SloClass], ...]:
    return (
        ("interactive", SloClass(1.0, 0.05, 1 / 3)),
        ("standard", SloClass(2.0, 0.15, 1 / 3)),
        ("batch", SloClass(30.0, 0.5, 1 / 3)),
    )


WORKLOADS: dict[str, SuiteWorkload] = {
    "conv": SuiteWorkload(
        "conv",
        "splitwise_conv.csv",
        (("all", SloClass(1.0, 0.15)),),
        0.9,
        "Azure conversation 2023, TTFT 1 s / mean TBT 0.15 s",
    ),
    "code": SuiteWorkload(
        "code",
        "splitwise_code.csv",
        (("all", SloClass(1.5, 0.3)),),
        0.12,
        "Azure code 2023, TTFT 1.5 s / mean TBT 0.3 s",
    ),
    "three-tier": SuiteWorkload(
        "three-tier",
        "splitwise_conv.csv",
        _three_tier(),
        0.6,
        "Azure conversation arrivals and lengths; interactive 1 s / 50 ms, standard "
        "2 s / 150 ms, batch 30 s / 500 ms, a third each",
    ),
}


def window_items(
    w: SuiteWorkload, n: int, window: int, rate: float | None, traces: Path
) -> list[WorkItem]:
    """Trace rows ``window*n .. window*n+n-1``, re-timed to ``rate`` (None: all rows up to
    the window's end at the trace's own pace, for the ceiling)."""
    spec = WorkloadSpec(
        num_requests=(window + 1) * n,
        arrivals=ArrivalSpec("trace"),
        slo_classes=tuple(c for _, c in w.classes),
        trace=str(traces / w.trace),
        seed=0,
    )
    items = build_workload(spec)
    if rate is None:
        return items
    part = items[window * n :]
    times = trace_arrivals([it.arrival_s for it in part], rate=rate)
    return [
        replace(it, index=i, arrival_s=float(t))
        for i, (it, t) in enumerate(zip(part, times, strict=True))
    ]


@dataclass(frozen=True)
class CeilingJob:
    config: str
    workload: str
    num_requests: int  # the first rows of the trace
    traces: str


@dataclass(frozen=True)
class PointJob:
    config: str
    workload: str
    policy: str
    num_requests: int
    window: int
    rate: float
    traces: str


def run_ceiling(job: CeilingJob) -> dict[str, Any]:
    w = WORKLOADS[job.workload]
    items = window_items(w, job.num_requests, 0, None, Path(job.traces))
    return cluster_ceiling(load_sim_config(job.config), items).as_dict()


def run_point(job: PointJob) -> dict[str, Any]:
    """One simulated point, summarised (a module-level function: runs in workers)."""
    from capacity import variant_config  # the benchmark's policy variants

    w = WORKLOADS[job.workload]
    items = window_items(w, job.num_requests, job.window, job.rate, Path(job.traces))
    cfg = variant_config(load_sim_config(job.config), job.policy)
    records = Simulator(cfg, items, seed=job.window).run().records
    met = [attained(r) for r in records]
    span = max(it.arrival_s for it in items) - min(it.arrival_s for it in items)
    out: dict[str, Any] = {
        "rate": job.rate,
        "attainment": sum(met) / len(met),
        "goodput_rps": sum(met) / span if span > 0 else None,
        "completed": sum(1 for r in records if r.outcome.value == "completed"),
    }
    if len(w.classes) > 1:
        by_slo = {(c.ttft_s, c.tbt_s): name for name, c in w.classes}
        per: dict[str, list[bool]] = {name: [] for name, _ in w.classes}
        for r, ok in zip(records, met, strict=True):
            per[by_slo[(r.slo_ttft_s, r.slo_tbt_s)]].append(ok)
        out["class_attainment"] = {k: (sum(v) / len(v) if v else None) for k, v in per.items()}
    return out


Progress = Callable[[str], None]


def _run(jobs: Sequence[Any], workers: int, fn: Any, say: Progress, what: str) -> list[Any]:
    t0, c0 = time.perf_counter(), _cpu_seconds()
    docs = run_jobs(list(jobs), workers, fn=fn)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    say(f"{what}: {len(jobs)} jobs in {wall:.0f} s ({cpu:.0f} CPU-s)")
    return docs


Key = tuple[str, str, int]  # workload, policy, window


def run_searches(
    args: argparse.Namespace, ceilings: dict[str, float], say: Progress
) -> tuple[dict[Key, CapacitySearch], dict[Key, list[dict[str, Any]]]]:
    """Every (workload, policy, window) search, one parallel round per point."""
    searches = {
        (wn, p, s): CapacitySearch(
            start=round(WORKLOADS[wn].start_fraction * ceilings[wn], 2), max_points=args.points
        )
        for wn in args.workloads
        for p in args.policies
        for s in range(args.seeds)
    }
    docs: dict[Key, list[dict[str, Any]]] = {k: [] for k in searches}
    for rnd in range(args.points):
        keys = [k for k, s in searches.items() if not s.done]
        if not keys:
            break
        jobs = [
            PointJob(
                args.config,
                k[0],
                k[1],
                args.num_requests,
                k[2],
                round(searches[k].next_rate(), 3),
                args.traces,
            )
            for k in keys
        ]
        results = _run(jobs, args.jobs, run_point, say, f"search round {rnd + 1}")
        for k, doc in zip(keys, results, strict=True):
            searches[k].add(doc["rate"], doc["attainment"])
            docs[k].append(doc)
    return searches, docs


def run_overload(
    args: argparse.Namespace, rr_capacity: float, say: Progress
) -> dict[str, dict[str, Any]]:
    """Goodput of every policy at each overload factor of round-robin's capacity."""
    wn = args.overload_workload
    keys = [(p, f, s) for p in args.policies for f in OVERLOAD for s in range(args.seeds)]
    jobs = [
        PointJob(args.config, wn, p, args.num_requests, s, round(f * rr_capacity, 3), args.traces)
        for p, f, s in keys
    ]
    results = _run(jobs, args.jobs, run_point, say, f"overload on {wn}")
    out: dict[str, dict[str, Any]] = {}
    for (p, f, _s), doc in zip(keys, results, strict=True):
        cell = out.setdefault(p, {}).setdefault(f"{f:g}x", {"rate": doc["rate"], "seeds": []})
        cell["seeds"].append(doc)
    for cells in out.values():
        for cell in cells.values():
            cell["goodput_rps"] = _median([d["goodput_rps"] for d in cell["seeds"]])
            cell["attainment"] = _median([d["attainment"] for d in cell["seeds"]])
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers (the machine may be shared)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def parse_args(argv: Sequence[str] | None, repo: Path, traces: Path) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="capacity.py --suite", description=__doc__.splitlines()[0] if __doc__ else None
    )
    ap.add_argument("--config", default=str(repo / "configs" / "paper-3xa100.yaml"))
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma list")
    ap.add_argument("--seeds", type=int, default=3, help="trace windows per workload")
    ap.add_argument("--num-requests", type=int, default=1000, help="requests per point")
    ap.add_argument("--points", type=int, default=6, help="points per capacity search")
    ap.add_argument(
        "--ceiling-requests", type=int, default=3000, help="at least this many for the ceiling"
    )
    ap.add_argument("--overload-workload", default="conv", help="'' to skip overload")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--traces", default=str(traces))
    ap.add_argument("--out", default=str(repo / "benchmarks" / "results" / "capacity-suite"))
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.policies = [p for p in args.policies.split(",") if p]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)} (known: {', '.join(WORKLOADS)})")
    if args.overload_workload and "round_robin" not in args.policies:
        ap.error("overload is relative to round_robin's capacity: include round_robin")
    return args


def main(argv: Sequence[str] | None, repo: Path, traces: Path) -> int:
    args = parse_args(argv, repo, traces)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    # At least ~1000 requests per engine, or the saturated window is mostly start-up.
    ceiling_n = max(args.num_requests * args.seeds, args.ceiling_requests)
    jobs = [CeilingJob(args.config, wn, ceiling_n, args.traces) for wn in args.workloads]
    ceil_docs = dict(
        zip(args.workloads, _run(jobs, args.jobs, run_ceiling, say, "ceilings"), strict=True)
    )
    ceilings = {wn: float(d["ceiling_rps"]) for wn, d in ceil_docs.items()}
    searches, docs = run_searches(args, ceilings, say)
    capacities: dict[str, dict[str, Any]] = {}
    for (wn, p, s), search in searches.items():
        cap = search.capacity()
        cell = capacities.setdefault(wn, {}).setdefault(p, {"seeds": []})
        cell["seeds"].append(
            {
                "window": s,
                "capacity_rps_at_90": cap.rps,
                "status": cap.status,
                "bound": cap.bound,
                "points": docs[(wn, p, s)],
            }
        )
    for per_policy in capacities.values():
        for cell in per_policy.values():
            cell["capacity_rps_at_90"] = _median([c["capacity_rps_at_90"] for c in cell["seeds"]])
    overload: dict[str, dict[str, Any]] = {}
    ow = args.overload_workload
    rr = capacities.get(ow, {}).get("round_robin", {}).get("capacity_rps_at_90")
    if ow and rr:
        overload = run_overload(args, rr, say)
    rows = table_rows(args.workloads, args.policies, capacities, ceilings, overload, ow)
    table = format_table(rows, OVERLOAD)
    print(table)
    out = Path(args.out)
    doc = {
        "config": Path(args.config).name,
        "num_requests": args.num_requests,
        "seeds": args.seeds,
        "points_per_search": args.points,
        "overload_workload": ow,
        "overload_factors": list(OVERLOAD),
        "workloads": {wn: WORKLOADS[wn].about for wn in args.workloads},
        "ceilings": ceil_docs,
        "capacities": capacities,
        "overload": overload,
        "table": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(_cpu_seconds(), 1),
        "jobs": args.jobs,
    }
    write_json(out / "suite.json", doc)
    (out / "table.md").write_text(format_table(rows, OVERLOAD, markdown=True) + "\n")
    if not args.no_plots:
        plot_suite(doc, out)
    say(f"wrote {out / 'suite.json'}, {out / 'table.md'} ({doc['cpu_s']:.0f} CPU-s)")
    return 0
