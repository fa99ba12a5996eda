"""``ascendra-proxy simulate``: run policies against the engine model in virtual time.

Theory of operation: only wiring.  The workload options are ``loadgen``'s (same names, same
:func:`loadgen.cli.workload_spec`), the SLO defaults to the config's ``slo.default``, and
each ``--policy`` (repeatable; default: the config's own) runs on the same workload and
seed.  Without ``--sweep`` every policy gives a loadgen-compatible run file; with ``--sweep
--rates`` a loadgen-compatible sweep file with ``capacity_rps_at_90``.  One policy writes
``--out``; several write ``<out>.<policy>.json`` each and a comparison to ``--out``, and
print a side-by-side table.  ``--set path=value`` changes a policy parameter (YAML value).

The learned slack predictor: ``--predictor-model FILE`` makes the Ascendra policy answer
with that model (checked before anything runs: a bad file is an error, not a silent
fallback; the baselines have no predictor and run as before); ``--training-data FILE``
appends every simulation's training rows to that rolling JSONL file (what ``ascendra-proxy
train --data`` reads), each run under its own row-id prefix; recording runs the
simulations in this process, one after another.  The ``predictor:`` section of the config
is the live proxy's and is not read here.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ascendra_proxy.configload import ConfigError
from ascendra_proxy.sim.setup import SimConfig, load_sim_config, with_policy
from ascendra_proxy.sim.sweep import Job, default_workers, policy_variant, run_jobs
from ascendra_proxy.sim.table import comparison_document, format_comparison
from loadgen.results import write_json
from loadgen.sweep import parse_rates, sweep_document
from loadgen.workloads import WorkloadSpec, build_workload, clip_summary

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from loadgen.cli import add_workload_args

    p.add_argument("--config", required=True, help="proxy YAML with engine_settings per backend")
    add_workload_args(p, rate=True, rates=True)  # loadgen's own options, same names
    p.add_argument("--sweep", action="store_true", help="run every rate of --rates")
    p.add_argument(
        "--policy", action="append", default=[], help="policy to run (repeatable; default: config)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="PATH=VALUE", help="policy parameter"
    )
    p.add_argument("--label", help="label for plots (default: the policy name)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-requests", dest="keep", action="store_true", default=None)
    keep.add_argument("--no-requests", dest="keep", action="store_false")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for sweeps")
    p.add_argument(
        "--predictor-model",
        metavar="FILE",
        help="learned slack predictor model for the ascendra policy (ascendra-proxy train)",
    )
    p.add_argument(
        "--training-data",
        metavar="FILE",
        help="append the simulations' predictor training rows to this JSONL file",
    )
    p.add_argument("--out", required=True, help="results JSON file")


def _workload(args: argparse.Namespace, cfg: SimConfig, rate: float | None) -> WorkloadSpec:
    from loadgen.catalog import load_trace_workloads
    from loadgen.cli import workload_spec

    # a catalog trace workload brings its own SLO; otherwise the config's default applies
    if args.slo_mix is None and (args.workload or "") not in load_trace_workloads():
        default = cfg.proxy.slo.default
        if args.slo_ttft is None:
            args.slo_ttft = default.ttft_ms / 1000.0
        if args.slo_tbt is None:
            args.slo_tbt = default.tpot_ms / 1000.0
    return workload_spec(args, rate)


def _changes(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        path, sep, value = pair.partition("=")
        if not sep or not path:
            raise ValueError(f"--set {pair!r}: expected PATH=VALUE")
        out[path.strip()] = yaml.safe_load(value)
    return out


def _configs(args: argparse.Namespace, base: SimConfig) -> list[tuple[str, SimConfig]]:
    names = args.policy or [base.proxy.policy.type]
    changes = _changes(args.set)
    out = []
    for name in names:
        cfg = policy_variant(base, name, changes) if changes else with_policy(base, name)
        out.append((name, cfg))
    return out


def _config_doc(
    args: argparse.Namespace, name: str, spec: WorkloadSpec, notes: dict[str, int]
) -> dict[str, Any]:
    from loadgen.catalog import source_note

    doc = {k: v for k, v in vars(args).items() if k not in ("policy", "jobs")}
    doc.update(
        simulated=True,
        policy=name,
        label=args.label if args.label and len(args.policy) <= 1 else name,
        arrivals_description=spec.arrivals.describe(),
        source_note=source_note(spec.trace, args.workload),
        workload_notes=notes,
    )
    return doc


def _check_model(path: str, configs: list[tuple[str, SimConfig]]) -> None:
    """Load the model once up front: a bad file fails here, with the reason."""
    from ascendra_proxy.predictor.model import read_model

    read_model(path)  # raises ModelFileError (a ValueError) naming the file and the problem
    if not any(cfg.proxy.policy_needs().predictor is not None for _, cfg in configs):
        names = ", ".join(name for name, _ in configs)
        note = f"note: no policy here ({names}) has a slack predictor; --predictor-model unused"
        print(note, file=sys.stderr)


def _out_path(out: str, name: str, many: bool) -> Path:
    p = Path(out)
    return p.with_name(f"{p.stem}.{name}{p.suffix or '.json'}") if many else p


def run(args: argparse.Namespace) -> int:
    try:
        base = load_sim_config(args.config)
        configs = _configs(args, base)
        rates: list[float | None]
        if args.sweep:
            if not args.rates:
                raise ValueError("--sweep needs --rates")
            swept = parse_rates(args.rates)
            rates = list(swept)
            spec = _workload(args, base, swept[0])
        else:
            rates = [args.rate]
            spec = _workload(args, base, args.rate)
        if args.predictor_model is not None:
            _check_model(args.predictor_model, configs)
        notes = clip_summary(build_workload(spec))
    except (ConfigError, ValueError) as exc:  # TraceError and ModelFileError are ValueErrors
        print(f"ascendra-proxy simulate: error: {exc}", file=sys.stderr)
        return 2
    if notes["clipped_prompts"]:
        print(f"note: prompts clipped to the context: {notes}", file=sys.stderr)
    keep = (not args.sweep) if args.keep is None else args.keep
    tag = secrets.token_hex(3)  # row ids stay unique when runs append to one file
    jobs = [
        Job(
            cfg,
            spec.with_rate(r) if r is not None else spec,
            r,
            args.seed,
            keep,
            predictor_model=args.predictor_model,
            training_data=args.training_data,
            run_id=f"sim-{tag}-{name}-{r}",
        )
        for name, cfg in configs
        for r in rates
    ]
    workers = args.jobs if args.jobs > 0 else default_workers()
    if args.training_data is not None:
        workers = 1  # one process appends to the file
    t0, c0 = time.perf_counter(), time.process_time()
    points = run_jobs(jobs, workers)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    docs = []
    many = len(configs) > 1
    for k, (name, _cfg) in enumerate(configs):
        mine = points[k * len(rates) : (k + 1) * len(rates)]
        config = _config_doc(args, name, spec, notes)
        if args.sweep:
            doc = sweep_document(config, mine)
        else:
            doc = {"kind": "run", "config": config, **mine[0]}
        write_json(_out_path(args.out, name, many), doc)
        docs.append((name, doc))
    if many:
        write_json(args.out, comparison_document(docs))
    print(format_comparison(docs), flush=True)
    print(f"{len(jobs)} simulation(s) in {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
    return 0
