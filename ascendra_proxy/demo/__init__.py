"""``ascendra-proxy demo``: the proxy in front of emulated engines, a load run, a report.

Theory of operation: the demo builds the workload once (:mod:`.settings`, :mod:`.load`),
then for each policy in turn starts three fresh emulated vLLM engines and a proxy configured
with that policy (:mod:`.stack`), replays the same requests through it with the load
generator, scrapes what the policy did from the proxy's ``/metrics``, and stops everything
before the next policy starts.  It then writes ``<out>/<policy>.json`` (loadgen run files, in
model time), ``<out>/summary.json`` and PNG plots, and prints one table with a column per
policy (:mod:`.report`).  Every child process is stopped on exit, whatever the exit: normal,
error, Ctrl-C or SIGTERM (:mod:`.children`).  Exit status: 0 done, 1 error, 2 bad options,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from ascendra_proxy.demo.children import ChildError, stop_signals_as_ctrl_c
from ascendra_proxy.demo.cpu import idle_cores, pick_time_scale
from ascendra_proxy.demo.settings import FULL, QUICK, DemoSettings
from ascendra_proxy.demo.stack import StackSpec, proxy_config, running_stack, scaled_profile

__all__ = ["add_arguments", "run"]

DEFAULT_POLICIES = "round_robin,ascendra"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})")
    a(
        "--rate",
        type=float,
        help=f"offered load in req/s of the emulated A100s (default {FULL.rate:g}; "
        "the wall-clock rate is this divided by --time-scale)",
    )
    a("--num-requests", type=int, help=f"requests per policy (default {FULL.num_requests})")
    a("--seed", type=int, default=0, help="workload and engine seed (default 0)")
    a(
        "--time-scale",
        type=_scale_arg,
        help="every emulated GPU step takes this many times longer; rate, SLOs and the "
        "proxy's timers are scaled to match, so the comparison is unchanged at less CPU "
        "per second (default 'auto': 3 to 6 depending on the idle CPU; 1 with --quick)",
    )
    a("--out", default="results/demo", help="output directory (default results/demo)")
    a(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK.num_requests} requests per policy, outputs capped at "
        f"{QUICK.max_output_tokens} tokens, time scale {QUICK.time_scale:g}",
    )


def _scale_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    defaults = QUICK if args.quick else FULL
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    given: float | str | None = args.time_scale
    scale = defaults.time_scale if given is None else None if given == "auto" else float(given)
    settings = DemoSettings(
        policies=policies,
        rate=defaults.rate if args.rate is None else args.rate,
        num_requests=defaults.num_requests if args.num_requests is None else args.num_requests,
        seed=args.seed,
        time_scale=1.0 if scale is None else scale,
        out=Path(args.out),
        quick=args.quick,
        max_output_tokens=defaults.max_output_tokens,
    )
    if scale is not None:
        return settings
    chosen, why = pick_time_scale(settings.model_tokens_per_s(), idle_cores())
    return replace(settings, time_scale=chosen, scale_note=why)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    processes: list[tuple[str, int]] = []
    try:
        with stop_signals_as_ctrl_c():
            try:
                settings = settings_from_args(args)
                spec = _stack_spec(settings)
            except ValueError as exc:
                print(f"ascendra-proxy demo: {exc}", file=sys.stderr)
                return 2
            docs = _run_policies(settings, spec, processes)
            _finish(settings, docs, processes, started)
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started has been stopped", file=sys.stderr)
        return 130
    except (ChildError, aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"ascendra-proxy demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _stack_spec(settings: DemoSettings) -> StackSpec:
    """Checks every policy's proxy config before anything is written or started."""
    spec = StackSpec(
        settings.profile,
        settings.seed,
        settings.time_scale,
        settings.slo_ttft_s,
        settings.slo_tbt_s,
        settings.out,
    )
    placeholders = [f"http://127.0.0.1:{port}" for port in (1, 2, 3)]
    for policy in settings.policies:
        proxy_config(policy, placeholders, spec)
    profile = scaled_profile(settings.profile, settings.time_scale, settings.out / "configs")
    return replace(spec, profile=profile)


def _run_policies(
    settings: DemoSettings, spec: StackSpec, processes: list[tuple[str, int]]
) -> dict[str, dict[str, Any]]:
    from ascendra_proxy.demo.load import prepare_sync, run_sync
    from ascendra_proxy.demo.report import policy_document
    from ascendra_proxy.demo.tails import read_request_log
    from loadgen.results import write_json

    for line in ["ascendra-proxy demo", *settings.describe()]:
        print(line, flush=True)
    prepared = prepare_sync(settings)
    progress = sys.stderr.isatty()
    docs: dict[str, dict[str, Any]] = {}
    for policy in settings.policies:
        print(f"[{policy}] starting 3 engines and the proxy", flush=True)
        with running_stack(policy, spec, processes) as stack:
            print(
                f"[{policy}] proxy {stack.proxy.url}: {settings.num_requests} requests at "
                f"{settings.wall_rate:g} req/s of wall clock",
                flush=True,
            )
            result = run_sync(stack, prepared, progress)
        entries = read_request_log(stack.request_log)  # complete: the proxy has stopped
        doc = policy_document(result, settings, str(stack.config_path), entries)
        write_json(settings.out / f"{policy}.json", doc)
        s = doc["summary"]
        print(
            f"[{policy}] done: {s['attained']}/{s['total']} met both SLOs, "
            f"{s['failed']} failed, {result.duration_s:.0f} s",
            flush=True,
        )
        docs[policy] = doc
    return docs


def _finish(
    settings: DemoSettings,
    docs: dict[str, dict[str, Any]],
    processes: list[tuple[str, int]],
    started: float,
) -> None:
    """Plots, summary.json and the report; ``started`` is the demo's monotonic start."""
    from ascendra_proxy.demo.report import format_report, summary_document, write_plots
    from loadgen.results import write_json

    paths = [str(settings.out / f"{p}.json") for p in docs]
    write_plots(docs, paths, settings.out)
    runtime_s = time.monotonic() - started
    summary = summary_document(settings, docs, processes, runtime_s)
    write_json(settings.out / "summary.json", summary)
    print()
    print(format_report(settings, docs, runtime_s))
