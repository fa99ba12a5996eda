"""The capacity suite: every workload where placement or deadlines could decide, each policy,
median of three trace windows, against the cluster's ceiling, plus goodput under overload.

Run through ``benchmarks/capacity.py --suite`` (options: ``--help`` there).  For every
workload of :data:`SUITE` (trace, SLO and engine config as ``capacity.py`` defines
them) and every policy (``round_robin``, ``least_loaded``, ``prefix_aware``: the baselines;
``ascendra``), all on the same engines with the same settings:

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
import json
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
from loadgen.metrics import attained, summarize
from loadgen.results import write_json
from loadgen.workloads import WorkItem, build_workload

POLICIES = ("round_robin", "least_loaded", "prefix_aware", "ascendra")
BASELINES = ("round_robin", "least_loaded", "prefix_aware")
OVERLOAD = (1.25, 1.5, 2.0)


# The suite's workloads (defined in capacity.py: trace, SLO, engine config), each with the
# first rate of its capacity searches as a share of its ceiling (a guess: the search brackets
# the crossing from anywhere, a good guess saves points), its requests per point (at conv's
# ~25 req/s, 500 requests are 20 s of arrivals, too short for a queue to build: capacities
# then exceed the sustained ceiling by 40%; Mooncake prompts are ~14k tokens, so 300 requests
# span minutes of arrivals at its capacity), and the
# requests its ceiling needs at least (about 1,000 per engine where up to 256 run at once,
# so the saturated window is not mostly start-up; far fewer where KV memory holds ~30).
@dataclass(frozen=True)
class SuiteEntry:
    start_fraction: float
    num_requests: int
    ceiling_requests: int


SUITE = {
    "conv": SuiteEntry(0.95, 2000, 3000),
    "code": SuiteEntry(0.12, 1000, 3000),
    "three-tier": SuiteEntry(0.6, 2000, 3000),
    "mooncake-conversation": SuiteEntry(0.5, 300, 900),
    "mooncake-synthetic": SuiteEntry(0.5, 300, 900),
}


def workload_of(name: str) -> Any:
    from capacity import WORKLOADS

    return WORKLOADS[name]


def config_of(name: str, config: str | None) -> str:
    from capacity import config_for

    return config_for(config, workload_of(name))


def window_items(name: str, n: int, window: int, rate: float | None) -> list[WorkItem]:
    """Trace rows ``window*n .. window*n+n-1``, re-timed to ``rate`` (None: all rows up to
    the window's end at the trace's own pace, for the ceiling)."""
    from capacity import workload_spec

    spec = workload_spec(workload_of(name), (window + 1) * n, 1.0, 0)
    items = build_workload(replace(spec, arrivals=ArrivalSpec("trace")))
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


@dataclass(frozen=True)
class PointJob:
    config: str
    workload: str
    policy: str
    num_requests: int
    window: int
    rate: float


def run_ceiling(job: CeilingJob) -> dict[str, Any]:
    items = window_items(job.workload, job.num_requests, 0, None)
    return cluster_ceiling(load_sim_config(job.config), items).as_dict()


def run_point(job: PointJob) -> dict[str, Any]:
    """One simulated point, summarised (a module-level function: runs in workers)."""
    from capacity import variant_config  # the benchmark's policy variants

    items = window_items(job.workload, job.num_requests, job.window, job.rate)
    cfg = variant_config(load_sim_config(job.config), job.policy)
    records = Simulator(cfg, items, seed=job.window).run().records
    met = sum(1 for r in records if attained(r))
    span = max(it.arrival_s for it in items) - min(it.arrival_s for it in items)
    summary = summarize(records)
    return {
        "rate": job.rate,
        "attainment": met / len(records),
        "goodput_rps": met / span if span > 0 else None,
        "completed": summary["completed"],
        "attainment_by_class": {
            c["name"]: c["slo_attainment"] for c in summary["attainment_by_class"]
        },
    }


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
            start=round(SUITE[wn].start_fraction * ceilings[wn], 3), max_points=args.points
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
                config_of(k[0], args.config),
                k[0],
                k[1],
                requests(args, k[0]),
                k[2],
                round(searches[k].next_rate(), 4),
            )
            for k in keys
        ]
        results = _run(jobs, args.jobs, run_point, say, f"search round {rnd + 1}")
        for k, doc in zip(keys, results, strict=True):
            searches[k].add(doc["rate"], doc["attainment"])
            docs[k].append(doc)
        # Every point so far, in case the run is cut short.
        write_json(
            Path(args.out) / "progress.json", {"|".join(map(str, k)): v for k, v in docs.items()}
        )
    return searches, docs


def run_overload(
    args: argparse.Namespace, rr_capacity: float, say: Progress
) -> dict[str, dict[str, Any]]:
    """Goodput of every policy at each overload factor of round-robin's capacity."""
    wn = args.overload_workload
    keys = [(p, f, s) for p in args.policies for f in OVERLOAD for s in range(args.seeds)]
    jobs = [
        PointJob(
            config_of(wn, args.config), wn, p, requests(args, wn), s, round(f * rr_capacity, 4)
        )
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


def requests(args: argparse.Namespace, name: str) -> int:
    if args.num_requests:
        return int(args.num_requests)
    return max(1, round(SUITE[name].num_requests * args.requests_scale))


def ceiling_requests(args: argparse.Namespace, name: str) -> int:
    """All windows' requests, and at least the workload's minimum (unless ``--num-requests``
    sets the size of everything, as quick runs and tests do)."""
    windows = requests(args, name) * args.seeds
    return windows if args.num_requests else max(windows, SUITE[name].ceiling_requests)


def _about(name: str) -> str:
    w = workload_of(name)
    return f"{w.trace}: {w.slo_text}"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers (the machine may be shared)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def median_capacity(seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median window's capacity; a window whose search never crossed 90% counts as its
    bound (``<`` the lowest rate it tried, ``>`` the highest), and when the median window is
    such a bound the capacity is None and ``capacity_text`` says ``<x`` or ``>x``."""
    ranked = []
    for c in seeds:
        if c["capacity_rps_at_90"] is not None:
            ranked.append((c["capacity_rps_at_90"], 0, ""))
        elif c["status"] == "below_range":
            ranked.append((c["bound"], -1, "<"))
        elif c["status"] == "above_range":
            ranked.append((c["bound"], 1, ">"))
    if not ranked:
        return {"capacity_rps_at_90": None, "capacity_text": "-"}
    value, _, mark = statistics.median_low(sorted(ranked))
    return {
        "capacity_rps_at_90": None if mark else value,
        "capacity_text": f"{mark}{value:.2f}",
        "capacity_bound": value,
        "capacity_mark": mark,
    }


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def parse_args(argv: Sequence[str] | None, repo: Path) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="capacity.py --suite", description=__doc__.splitlines()[0] if __doc__ else None
    )
    ap.add_argument("--config", help="simulation config (default: each workload's own)")
    ap.add_argument("--workloads", default=",".join(SUITE), help="comma list")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma list")
    ap.add_argument("--seeds", type=int, default=3, help="trace windows per workload")
    ap.add_argument(
        "--num-requests",
        type=int,
        help="requests per point of every workload, and its ceiling's: N x seeds "
        "(default: each workload's own, and its ceiling's minimum)",
    )
    ap.add_argument("--points", type=int, default=4, help="points per capacity search")
    ap.add_argument(
        "--requests-scale",
        type=float,
        default=1.0,
        help="multiply every workload's requests per point (a quicker, noisier suite)",
    )
    ap.add_argument("--overload-workload", default="conv", help="'' to skip overload")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(repo / "benchmarks" / "results" / "capacity-suite"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--from-json", help="only re-render the table and plots of a suite.json")
    args = ap.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.policies = [p for p in args.policies.split(",") if p]
    unknown = set(args.workloads) - set(SUITE)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)} (known: {', '.join(SUITE)})")
    if args.overload_workload and "round_robin" not in args.policies:
        ap.error("overload is relative to round_robin's capacity: include round_robin")
    return args


def render(doc: dict[str, Any], out: Path, plots: bool) -> None:
    """Table, ``suite.json``, ``table.md`` and plots from a suite document."""
    for per_policy in doc["capacities"].values():
        for cell in per_policy.values():
            cell.update(median_capacity(cell["seeds"]))
    workloads = list(doc["capacities"])
    policies = list(dict.fromkeys(p for c in doc["capacities"].values() for p in c))
    ceilings = {wn: float(d["ceiling_rps"]) for wn, d in doc["ceilings"].items()}
    ow = doc["overload_workload"]
    doc["table"] = table_rows(workloads, policies, doc["capacities"], ceilings, doc["overload"], ow)
    print(format_table(doc["table"], OVERLOAD))
    write_json(out / "suite.json", doc)
    (out / "table.md").write_text(format_table(doc["table"], OVERLOAD, markdown=True) + "\n")
    if plots:
        plot_suite(doc, out)


def main(argv: Sequence[str] | None, repo: Path) -> int:
    args = parse_args(argv, repo)
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        render(doc, Path(args.out), not args.no_plots)
        return 0
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    # At least ~1000 requests per engine, or the saturated window is mostly start-up.
    # One ceiling per engine config and trace rows (three-tier shares conv's).
    ceiling_jobs = {
        wn: CeilingJob(
            config_of(wn, args.config),
            wn,
            ceiling_requests(args, wn),
        )
        for wn in args.workloads
    }
    unique: dict[tuple[str, str, int], CeilingJob] = {}
    for job in ceiling_jobs.values():
        unique.setdefault((job.config, workload_of(job.workload).trace, job.num_requests), job)
    found = dict(
        zip(
            unique,
            _run(list(unique.values()), args.jobs, run_ceiling, say, "ceilings"),
            strict=True,
        )
    )
    ceil_docs = {
        wn: found[(j.config, workload_of(wn).trace, j.num_requests)]
        for wn, j in ceiling_jobs.items()
    }
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
            cell.update(median_capacity(cell["seeds"]))
    overload: dict[str, dict[str, Any]] = {}
    ow = args.overload_workload
    rr = capacities.get(ow, {}).get("round_robin", {}).get("capacity_rps_at_90")
    if ow and rr:
        overload = run_overload(args, rr, say)
    out = Path(args.out)
    doc = {
        "configs": {wn: Path(config_of(wn, args.config)).name for wn in args.workloads},
        "num_requests": {wn: requests(args, wn) for wn in args.workloads},
        "seeds": args.seeds,
        "points_per_search": args.points,
        "overload_workload": ow,
        "overload_factors": list(OVERLOAD),
        "workloads": {wn: _about(wn) for wn in args.workloads},
        "ceilings": ceil_docs,
        "capacities": capacities,
        "overload": overload,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(_cpu_seconds(), 1),
        "jobs": args.jobs,
    }
    render(doc, out, not args.no_plots)
    say(f"wrote {out / 'suite.json'}, {out / 'table.md'} ({doc['cpu_s']:.0f} CPU-s)")
    return 0
