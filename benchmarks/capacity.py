"""Capacity at 90% SLO attainment in the simulator: the Ascendra paper's setup.

Three A100-80GB instances serving Llama-3-8B with vLLM v1's A100 defaults
(``configs/paper-3xa100.yaml``).  For each workload (Azure LLM inference trace 2023,
conversation: TTFT 1.0 s / mean TBT 0.15 s; code: TTFT 1.5 s / mean TBT 0.3 s; and the
conversation trace under the artifact's tighter 0.5 s / 0.1 s; ``three-tier``: the
conversation trace with three SLO classes; ``mooncake-conversation`` and
``mooncake-synthetic``: the Mooncake traces with their prefix sharing, on Llama-3.1-8B with a
128k context (``configs/paper-3xa100-128k.yaml``) and a TTFT SLO scaled from each prompt's
idle prefill time, see ``loadgen/data/workloads.yaml``; the first
``--num-requests`` rows, re-timed to each rate of the sweep) every variant is simulated at
every rate with the same seed: ``ascendra`` (2 LP + 1 HP, the config's parameters),
``round_robin`` and ``least_loaded`` (3 mixed instances), and the ablations of Ascendra.
Prints the capacity table (ratio to round-robin and to least-loaded), writes every sweep
as a loadgen-compatible file, a summary JSON, the plots (``loadgen.plot``), and a
per-request breakdown of who misses and why at ``--detail-rate``.

    .venv/bin/python benchmarks/capacity.py --jobs 2                  # everything
    .venv/bin/python benchmarks/capacity.py --workloads conv --no-ablations --num-requests 500
    .venv/bin/python benchmarks/capacity.py --suite --jobs 2    # the suite (capacity_suite.py)

Ablations (each changes one thing relative to ``ascendra``): ``edf_only`` (the HP backend
becomes a third LP: EDF late binding, no offload), ``no_infeasible_last`` (the proxy queue
serves requests that already missed their deadline first, as plain EDF does),
``offload_only`` (no proxy queue: LP
backends take requests at once, FCFS, offload to HP on), ``no_migration``, ``warming``,
``adaptive_roles``, ``paper_rule`` (the paper's offload rule and constants), and
``learned`` (the LightGBM slack predictor, with ``--learned-model FILE``).

Engine variants (the same engines with another per-step token budget, for every policy that
runs on them): the paper compared against vLLM without chunked prefill and Sarathi-Serve
with 512-token chunks, not against vLLM v1's chunked default.  ``rr_unchunked`` and
``ascendra_unchunked`` give every engine a budget of ``max_model_len`` (whole prompts in one
step), ``rr_chunk512`` and ``ascendra_chunk512`` a budget of 512.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ascendra_proxy.sim.analysis import breakdown, format_breakdown  # noqa: E402
from ascendra_proxy.sim.report import point_document  # noqa: E402
from ascendra_proxy.sim.setup import SimConfig, load_sim_config, with_policy  # noqa: E402
from ascendra_proxy.sim.simulator import Simulator  # noqa: E402
from ascendra_proxy.sim.sweep import policy_variant, run_jobs  # noqa: E402
from ascendra_proxy.sim.table import capacity_cell, class_attainment  # noqa: E402
from loadgen.arrivals import ArrivalSpec  # noqa: E402
from loadgen.catalog import (  # noqa: E402
    load_trace_workloads,
    source_note,
    trace_workload_spec,
    traces_dir,
)
from loadgen.results import write_json  # noqa: E402
from loadgen.sweep import sweep_document  # noqa: E402
from loadgen.workloads import SloClass, WorkloadSpec, build_workload  # noqa: E402

# $ASCENDRA_TRACES_DIR, else the shared data next to the checkout (or its worktree folder)
TRACES = traces_dir()


@dataclass(frozen=True)
class Workload:
    name: str
    trace: str
    ttft_s: float  # the SLO; for a catalog workload with a per-request TTFT, its floor
    tbt_s: float
    rates: tuple[float, ...]
    detail_rate: float
    catalog: str | None = None  # a trace workload of loadgen/data/workloads.yaml
    config: str | None = None  # its own simulation config (e.g. a long-context model)

    @property
    def slo_text(self) -> str:
        if self.catalog is not None:
            w = load_trace_workloads()[self.catalog]
            if w.slo_rule is not None:
                r = w.slo_rule
                return (
                    f"TTFT {r.factor:g} x idle prefill (>= {r.floor_s:g} s) / "
                    f"mean TBT {r.tbt_s:g} s"
                )
            return "classes " + ", ".join(
                f"{c.label} {c.ttft_s:g}/{c.tbt_s:g} s" for c in w.slo_classes
            )
        return f"TTFT {self.ttft_s:g} s / mean TBT {self.tbt_s:g} s"


WORKLOADS = {
    # The two workloads.  conv: ShareGPT-like SLO; code: the artifact's code-trace SLO.
    "conv": Workload(
        "conv", "splitwise_conv.csv", 1.0, 0.15, (16, 18, 19, 20, 21, 22, 23, 24, 26), 22.0
    ),
    "code": Workload(
        "code", "splitwise_code.csv", 1.5, 0.3, (1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6), 2.5
    ),
    # The artifact's SLO for the conversation trace (tighter: scheduling matters more).
    "conv-tight": Workload(
        "conv-tight", "splitwise_conv.csv", 0.5, 0.1, (12, 14, 16, 18, 20, 22), 18.0
    ),
    # Azure conv arrivals and lengths, three SLO classes (loadgen/data/workloads.yaml).
    "three-tier": Workload(
        "three-tier",
        "splitwise_conv.csv",
        1.0,
        0.05,
        (16, 18, 20, 22, 24, 26),
        22.0,
        catalog="three-tier",
    ),
    # Mooncake traces (prefix-sharing structure, long prompts) on the long-context model.
    "mooncake-conversation": Workload(
        "mooncake-conversation",
        "mooncake/conversation_trace.jsonl",
        1.0,
        0.15,
        (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
        0.5,
        catalog="mooncake-conversation",
        config="paper-3xa100-128k.yaml",
    ),
    "mooncake-synthetic": Workload(
        "mooncake-synthetic",
        "mooncake/synthetic_trace.jsonl",
        1.0,
        0.15,
        (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
        0.5,
        catalog="mooncake-synthetic",
        config="paper-3xa100-128k.yaml",
    ),
}
MAIN = ("ascendra", "round_robin", "least_loaded", "prefix_aware")
ABLATIONS = (
    "edf_only",
    "no_infeasible_last",
    "offload_only",
    "no_migration",
    "warming",
    "adaptive_roles",
    "paper_rule",
    "learned",
    "rr_unchunked",
    "rr_chunk512",
    "ascendra_unchunked",
    "ascendra_chunk512",
)


def with_engines(cfg: SimConfig, lp_only: bool = False, **settings: Any) -> SimConfig:
    """``cfg`` with ``settings`` replaced in every backend's engine settings (LP pools only
    with ``lp_only``); a ``None`` token budget means the backend's ``max_model_len``."""

    def engine(b: Any) -> Any:
        es = b.engine_settings
        changes = dict(settings)
        if changes.get("max_num_batched_tokens", 0) is None:
            changes["max_num_batched_tokens"] = es.max_model_len
        return replace(b, engine_settings=replace(es, **changes))

    pools = tuple(
        replace(p, backends=tuple(engine(b) for b in p.backends))
        if p.role == "lp" or not lp_only
        else p
        for p in cfg.proxy.pools
    )
    return replace(cfg, proxy=replace(cfg.proxy, pools=pools))


ENGINE_BUDGETS = {"unchunked": None, "chunk512": 512}


def variant_config(base: SimConfig, name: str) -> SimConfig:
    """The simulation config of one variant (see the module docstring)."""
    policy, _, engines = name.partition("_")
    if policy in ("rr", "ascendra") and engines in ENGINE_BUDGETS:
        cfg = with_policy(base, "round_robin" if policy == "rr" else "ascendra")
        return with_engines(cfg, max_num_batched_tokens=ENGINE_BUDGETS[engines])
    if name in ("round_robin", "least_loaded", "prefix_aware"):
        return with_policy(base, name)
    asc = with_policy(base, "ascendra")
    if name in ("ascendra", "learned"):
        return asc
    if name == "edf_only":
        pools = tuple(replace(p, role="lp") for p in asc.proxy.pools)
        return replace(asc, proxy=replace(asc.proxy, pools=pools))
    if name == "offload_only":
        asc = with_engines(asc, lp_only=True, scheduling_policy="fcfs")
        return policy_variant(asc, "ascendra", {"lp_ordering": "engine_priority"})
    changes: dict[str, dict[str, object]] = {
        "no_infeasible_last": {"lp_infeasible_last": False},
        "no_migration": {"migration.enabled": False},
        "warming": {"warming.enabled": True},
        "adaptive_roles": {"roles": "adaptive"},
        "paper_rule": {"offload.rule": "paper", "offload.margin_max_frac": 1.0},
    }
    return policy_variant(asc, "ascendra", changes[name])


@dataclass(frozen=True)
class Point:
    config: str | None  # None: the workload's own
    variant: str
    workload: str
    num_requests: int
    rate: float
    seed: int
    keep_requests: bool = False
    learned_model: str | None = None


def workload_spec(w: Workload, n: int, rate: float, seed: int) -> WorkloadSpec:
    if w.catalog is not None:
        return trace_workload_spec(
            w.catalog, n, ArrivalSpec("trace", rate), seed, trace=TRACES / w.trace
        )
    return WorkloadSpec(
        num_requests=n,
        arrivals=ArrivalSpec("trace", rate),
        slo_classes=(SloClass(w.ttft_s, w.tbt_s),),
        trace=str(TRACES / w.trace),
        seed=seed,
    )


def config_for(config: str | None, w: Workload) -> str:
    """``--config`` if given, else the workload's own config, else the paper's."""
    if config is not None:
        return config
    return str(REPO / "configs" / (w.config or "paper-3xa100.yaml"))


def run_point(p: Point) -> dict[str, Any]:
    """One simulated point (a module-level function: it runs in worker processes)."""
    cfg = variant_config(load_sim_config(config_for(p.config, WORKLOADS[p.workload])), p.variant)
    predictor = None
    if p.variant == "learned":
        predictor = _learned(cfg, p.learned_model)
    items = build_workload(workload_spec(WORKLOADS[p.workload], p.num_requests, p.rate, p.seed))
    result = Simulator(cfg, items, seed=p.seed, predictor=predictor).run()
    return point_document(result, p.rate, p.keep_requests)


def _learned(cfg: SimConfig, model: str | None) -> Any:
    from ascendra_proxy.core.policies.ascendra import AscendraParams
    from ascendra_proxy.predictor.model import load_predictor
    from ascendra_proxy.predictor.train import analytical_for

    params = cfg.proxy.policy.params
    assert isinstance(params, AscendraParams) and model is not None
    profiles = sorted({b.engine_settings.profile or "" for _p, b in cfg.proxy.backends()})
    fallback = analytical_for(
        profiles, fallback_step_s=params.fallback_step_s, max_scrape_age_s=params.max_scrape_age_s
    )
    return load_predictor(model, fallback, watch=False)


def _sweep_doc(w: Workload, variant: str, n: int, points: list[dict[str, Any]]) -> dict[str, Any]:
    config = {
        "label": variant,
        "policy": variant,
        "workload": w.name,
        "trace": w.trace,
        "num_requests": n,
        "slo_ttft_s": w.ttft_s,
        "slo_tbt_s": w.tbt_s,
        "slo": w.slo_text,
        "simulated": True,
        "source_note": source_note(w.trace, w.catalog),
    }
    return sweep_document(config, sorted(points, key=lambda p: p["rate"]))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def capacity_table(w: Workload, docs: dict[str, dict[str, Any]], n: int) -> str:
    rr = docs["round_robin"].get("capacity_rps_at_90")
    ll = docs["least_loaded"].get("capacity_rps_at_90")
    rates = sorted({p["rate"] for d in docs.values() for p in d["points"]})
    lines = [
        f"{w.name}: {w.trace}, first {n} requests, {w.slo_text}",
        f"{'variant':<16}{'cap@90%':>9}{'x RR':>7}{'x LL':>7}   attainment % at "
        + " ".join(f"{r:>5g}" for r in rates),
    ]
    for name, d in docs.items():
        cap = d.get("capacity_rps_at_90")
        x_rr, x_ll = _ratio(cap, rr), _ratio(cap, ll)
        att = {p["rate"]: p["summary"]["slo_attainment"] for p in d["points"]}
        cells = " ".join(f"{att[r] * 100:5.1f}" if r in att else "    -" for r in rates)
        ratios = "".join(f"{'-' if x is None else f'{x:.2f}':>7}" for x in (x_rr, x_ll))
        lines.append(f"{name:<16}{capacity_cell(d):>9}{ratios}   {cells}")
        by_rate = {p["rate"]: class_attainment(p["summary"]) for p in d["points"]}
        for cls in dict.fromkeys(c for per in by_rate.values() for c in per):
            vals = [by_rate.get(r, {}).get(cls) for r in rates]
            cells = " ".join("    -" if v is None else f"{v * 100:5.1f}" for v in vals)
            lines.append(f"  {cls:<37.37}   {cells}")
    return "\n".join(lines)


def _variant_summary(d: dict[str, Any], rr: float | None, ll: float | None) -> dict[str, Any]:
    cap = d.get("capacity_rps_at_90")
    keys = (
        "slo_attainment",
        "ttft_attainment",
        "tbt_attainment",
        "offloads",
        "migrations",
        "warms",
        "ttft_p90",
        "tbt_mean_p90",
    )
    return {
        "capacity_rps_at_90": cap,
        "capacity_status": d.get("capacity_status"),
        "capacity_bound": d.get("capacity_bound"),
        "vs_round_robin": _ratio(cap, rr),
        "vs_least_loaded": _ratio(cap, ll),
        "points": [
            {
                "rate": p["rate"],
                **{k: p["summary"].get(k) for k in keys},
                "attainment_by_class": class_attainment(p["summary"]),
            }
            for p in d["points"]
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config",
        help="simulation config (default: the workload's own, else configs/paper-3xa100.yaml)",
    )
    ap.add_argument("--workloads", default="conv,code,conv-tight")
    ap.add_argument("--num-requests", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rates", help="override the rates of every workload, e.g. 16,20,24")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--ablation-workloads", default="conv,code", help="workloads for ablations")
    ap.add_argument("--ablations", default=",".join(ABLATIONS), help="which ablations (comma list)")
    ap.add_argument("--learned-model", help="LightGBM predictor file for the 'learned' ablation")
    ap.add_argument("--detail-rate", type=float, help="rate of the per-request breakdown")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "capacity"))
    ap.add_argument("--summary-dir", default=str(REPO / "benchmarks" / "capacity"))
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    unknown = set(args.ablations.split(",")) - set(ABLATIONS)
    if unknown:
        ap.error(f"unknown ablations {sorted(unknown)} (known: {', '.join(ABLATIONS)})")
    return args


def _points(args: argparse.Namespace) -> list[Point]:
    points = []
    abl = set(args.ablation_workloads.split(",")) if not args.no_ablations else set()
    for wname in args.workloads.split(","):
        w = WORKLOADS[wname]
        rates = [float(r) for r in args.rates.split(",")] if args.rates else w.rates
        variants = list(MAIN)
        if wname in abl:
            chosen = args.ablations.split(",")
            variants += [v for v in chosen if v != "learned" or args.learned_model]
        for v in variants:
            for r in rates:
                points.append(
                    Point(
                        args.config,
                        v,
                        wname,
                        args.num_requests,
                        float(r),
                        args.seed,
                        learned_model=args.learned_model,
                    )
                )
        detail = args.detail_rate or w.detail_rate
        for v in MAIN:
            points.append(
                Point(
                    args.config, v, wname, args.num_requests, detail, args.seed, keep_requests=True
                )
            )
    return points


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--suite" in argv:
        import capacity_suite

        rest = [a for a in argv if a != "--suite"]
        return capacity_suite.main(rest, REPO)
    args = parse_args(argv)
    points = _points(args)
    t0 = time.perf_counter()
    done = [0]

    def progress(i: int, _doc: dict[str, Any]) -> None:
        done[0] += 1
        p = points[i]
        print(
            f"[{done[0]}/{len(points)} {time.perf_counter() - t0:6.0f}s] {p.workload} "
            f"{p.variant} @ {p.rate:g}",
            file=sys.stderr,
            flush=True,
        )

    docs = run_jobs(points, args.jobs, progress, fn=run_point)
    results, summary_dir = Path(args.results), Path(args.summary_dir)
    summary: dict[str, Any] = {
        "config": Path(args.config).name if args.config else "per workload",
        "num_requests": args.num_requests,
        "seed": args.seed,
        "workloads": {},
    }
    for wname in args.workloads.split(","):
        w = WORKLOADS[wname]
        summary["workloads"][wname] = report_workload(args, w, points, docs, results, summary_dir)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(summary_dir / "capacity.json", summary)
    print(f"wrote {summary_dir / 'capacity.json'} and sweeps under {results}")
    return 0


def report_workload(
    args: argparse.Namespace,
    w: Workload,
    points: list[Point],
    docs: list[dict[str, Any]],
    results: Path,
    summary_dir: Path,
) -> dict[str, Any]:
    sweeps: dict[str, list[dict[str, Any]]] = {}
    details: dict[str, dict[str, Any]] = {}
    for p, d in zip(points, docs, strict=True):
        if p.workload != w.name:
            continue
        if p.keep_requests:
            details[p.variant] = {
                "kind": "run",
                "config": {"label": f"{p.variant} @ {p.rate:g}/s", "workload": w.name},
                **d,
            }
        else:
            sweeps.setdefault(p.variant, []).append(d)
    sweep_docs = {v: _sweep_doc(w, v, args.num_requests, pts) for v, pts in sweeps.items()}
    paths: dict[str, Path] = {}
    for v, doc in sweep_docs.items():
        paths[v] = results / w.name / f"sweep.{v}.json"
        write_json(paths[v], doc)
    for v, doc in details.items():
        paths[f"detail.{v}"] = results / w.name / f"detail.{v}.json"
        write_json(paths[f"detail.{v}"], doc)
    print(capacity_table(w, sweep_docs, args.num_requests))
    rr = sweep_docs["round_robin"].get("capacity_rps_at_90")
    ll = sweep_docs["least_loaded"].get("capacity_rps_at_90")
    out: dict[str, Any] = {
        "trace": w.trace,
        "slo_ttft_s": w.ttft_s,
        "slo_tbt_s": w.tbt_s,
        "variants": {v: _variant_summary(d, rr, ll) for v, d in sweep_docs.items()},
        "breakdown": {},
    }
    for v, doc in details.items():
        b = breakdown(doc)
        out["breakdown"][v] = {"rate": doc["rate"], **b}
        print(format_breakdown(f"{v} @ {doc['rate']:g}/s", b))
    if not args.no_plots:
        _plots(w, paths, summary_dir)
    return out


def _plots(w: Workload, paths: dict[str, Path], summary_dir: Path) -> None:
    from loadgen.plot import plot_files

    main = [str(paths[v]) for v in MAIN] + [
        str(paths[f"detail.{v}"]) for v in MAIN if f"detail.{v}" in paths
    ]
    plot_files(main, str(summary_dir / w.name))
    ablations = [str(p) for k, p in paths.items() if not k.startswith("detail.")]
    if len(ablations) > len(MAIN):
        out = summary_dir / w.name / "ablations"
        plot_files(ablations, str(out))


if __name__ == "__main__":
    raise SystemExit(main())
