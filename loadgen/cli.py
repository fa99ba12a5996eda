"""The ``loadgen`` command: ``run``, ``sweep`` and ``plot``.

Theory of operation: this module only wires argparse to the package.  ``run`` and ``sweep``
share the target and workload options, turn them into a :class:`Target` and a
:class:`WorkloadSpec`, open one aiohttp session, resolve the model (``GET /v1/models`` when
``--model`` is not given) and the token counter, then measure.  Ctrl-C sets a stop event: the
current point ends early and whatever was measured is written, marked ``interrupted``.  A
second Ctrl-C kills the process.  ``plot`` draws PNGs from results files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import aiohttp

from loadgen.arrivals import ArrivalSpec
from loadgen.catalog import load_trace_workloads, source_note, trace_workload_spec
from loadgen.client import SLO_HEADER_MODES, Target, base_url, discover_model, make_session
from loadgen.lengths import load_named_workloads, parse_length_spec
from loadgen.prompts import TokenCounter
from loadgen.report import format_summary, format_sweep
from loadgen.results import write_json
from loadgen.runner import RunOptions, make_counter, measure, run_async
from loadgen.sweep import SweepPoint, parse_rates, point_document, run_sweep, sweep_document
from loadgen.workloads import (
    DisconnectSpec,
    PrefixSpec,
    SloClass,
    WorkItem,
    WorkloadSpec,
    build_workload,
    clip_summary,
    parse_slo_mix,
)


class UsageError(Exception):
    """Options that do not describe a valid run (reported without a traceback)."""


SYNTHETIC = ("synthetic", "fixed", "uniform", "lognormal")
Body = Callable[[aiohttp.ClientSession, Target, TokenCounter, asyncio.Event], Awaitable[int]]


def add_target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument("--url", required=True, help="server base URL, with or without /v1")
    g.add_argument("--model", help="model name (default: the first one /v1/models lists)")
    g.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    g.add_argument(
        "--tokenizer",
        help="count prompt tokens locally: a tokenizer.json path, 'emulator', or 'approx' "
        "(default: the target's POST /tokenize)",
    )
    g.add_argument("--tokenize-url", help="explicit /tokenize URL (e.g. a backend behind a proxy)")
    g.add_argument("--max-concurrency", type=int, help="cap on requests in flight")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument(
        "--slo-headers",
        choices=SLO_HEADER_MODES,
        default="numbers",
        help="send each request's SLO as x-slo-ttft-ms/x-slo-tpot-ms (numbers) or its class "
        "name as x-slo-class (class: the proxy's slo.classes must define the names)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--label", help="system/policy name for plots (default: the URL)")
    g.add_argument("--out", required=True, help="results JSON file")


def add_workload_args(
    p: argparse.ArgumentParser,
    *,
    rate: bool = True,
    rates: bool = False,
    rates_required: bool = False,
) -> None:
    """The workload options :func:`workload_spec` reads; other front ends reuse them.

    ``rate`` adds ``--rate``/``--rate-scale``, ``rates`` adds ``--rates`` (for sweeps).
    """
    g = p.add_argument_group("workload")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--trace",
        help="CSV with arrived_at,num_prefill_tokens,num_decode_tokens, or a Mooncake .jsonl",
    )
    names = ", ".join(
        sorted(load_named_workloads()) + sorted(load_trace_workloads()) + list(SYNTHETIC)
    )
    src.add_argument("--workload", help=f"named workload: {names}")
    g.add_argument(
        "--prompt-len", help="N | fixed:N | uniform:LO:HI | lognormal:MEDIAN:SIGMA[:MAX]"
    )
    g.add_argument("--output-len", help="same forms as --prompt-len")
    g.add_argument("--num-requests", type=int, help="requests per run (default: whole trace)")
    g.add_argument("--max-prompt-len", type=int, help="clip prompt lengths (model context)")
    g.add_argument("--max-output-len", type=int, help="clip output lengths")
    g.add_argument(
        "--context-tokens",
        type=int,
        help="clip prompts to this context minus their output (counted in the results)",
    )
    g.add_argument(
        "--block-tokens",
        type=int,
        help="Mooncake traces: tokens per trace block (default 512; fewer for a small context)",
    )
    g.add_argument("--arrivals", choices=("poisson", "gamma", "constant", "trace"))
    if rate:
        g.add_argument("--rate", type=float, help="req/s (with a trace: re-time to this rate)")
        g.add_argument("--rate-scale", type=float, help="trace only: multiply its rate by this")
    if rates:
        g.add_argument("--rates", required=rates_required, help="comma-separated req/s: 10,14")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1 = Poisson)")
    g.add_argument("--slo-ttft", type=float, help="TTFT SLO in seconds")
    g.add_argument("--slo-tbt", type=float, help="mean TBT SLO in seconds")
    g.add_argument(
        "--slo-mix",
        help='named mix (three-tier) or classes "[NAME=]TTFT:TBT:SHARE,..." '
        'e.g. "fast=1.0:0.15:0.7,2.0:0.3:0.3"',
    )
    g.add_argument("--prefix-groups", type=int, help="number of shared system prompts")
    g.add_argument("--prefix-tokens", type=int, help="tokens per shared system prompt")
    g.add_argument("--disconnect-share", type=float, default=0.0, help="share of clients leaving")
    g.add_argument("--disconnect-after", type=float, default=1.0, help="seconds after sending")
    g.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadgen", description="SLO goodput load generator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one load point: summary table and results JSON")
    add_target_args(run)
    add_workload_args(run)
    run.set_defaults(func=cmd_run)
    sweep = sub.add_parser("sweep", help="several rates and the capacity at 90%% attainment")
    add_target_args(sweep)
    add_workload_args(sweep, rate=False, rates=True, rates_required=True)
    sweep.add_argument("--cooldown", type=float, default=2.0, help="seconds between points")
    sweep.set_defaults(func=cmd_sweep)
    plot = sub.add_parser("plot", help="PNG plots from results files")
    plot.add_argument("results", nargs="+", help="run or sweep JSON files")
    plot.add_argument("--out", required=True, help="output directory")
    plot.set_defaults(func=cmd_plot)
    return parser


def workload_spec(args: argparse.Namespace, rate: float | None) -> WorkloadSpec:
    """The :class:`WorkloadSpec` the options describe; raises ValueError on bad combinations."""
    traced = load_trace_workloads().get(args.workload or "")
    kind = args.arrivals or ("trace" if args.trace or traced else "poisson")
    if args.burstiness != 1.0 and kind == "poisson":
        kind = "gamma"
    scale = getattr(args, "rate_scale", None)
    if kind != "trace" and rate is None:
        raise ValueError(f"{kind} arrivals need --rate")
    if scale is not None and (kind != "trace" or rate is not None):
        raise ValueError("--rate-scale applies to trace arrivals without --rate")
    if args.num_requests is None and not (args.trace or traced):
        raise ValueError("--num-requests is required with --workload")
    arrivals = ArrivalSpec(kind, rate, args.burstiness, scale)
    if traced is not None:
        return _trace_workload(args, traced.name, arrivals)
    prompt_len = output_len = None
    named = None
    if args.workload in SYNTHETIC:
        if not (args.prompt_len and args.output_len):
            raise ValueError(f"--workload {args.workload} needs --prompt-len and --output-len")
        default_kind = "fixed" if args.workload == "synthetic" else args.workload
        prompt_len = parse_length_spec(args.prompt_len, default_kind)
        output_len = parse_length_spec(args.output_len, default_kind)
    else:
        named = args.workload
        prompt_len = parse_length_spec(args.prompt_len) if args.prompt_len else None
        output_len = parse_length_spec(args.output_len) if args.output_len else None
    prefix = None
    if args.prefix_groups or args.prefix_tokens:
        prefix = PrefixSpec(args.prefix_groups or 1, args.prefix_tokens or 0)
    disconnect = None
    if args.disconnect_share:
        disconnect = DisconnectSpec(args.disconnect_share, args.disconnect_after)
    spec = WorkloadSpec(
        num_requests=args.num_requests or _trace_len(args.trace),
        arrivals=arrivals,
        slo_classes=_slo_classes(args),
        trace=args.trace,
        workload=named,
        prompt_len=prompt_len,
        output_len=output_len,
        prefix=prefix,
        disconnect=disconnect,
        seed=args.seed,
        # getattr: other front ends (the simulator) reuse this with their own option sets
        max_prompt_tokens=getattr(args, "max_prompt_len", None),
        max_output_tokens=getattr(args, "max_output_len", None),
        context_tokens=getattr(args, "context_tokens", None),
    )
    return _with_blocks(args, spec)


def _with_blocks(args: argparse.Namespace, spec: WorkloadSpec) -> WorkloadSpec:
    block_tokens = getattr(args, "block_tokens", None)
    return spec if block_tokens is None else replace(spec, block_tokens=block_tokens)


def _trace_workload(args: argparse.Namespace, name: str, arrivals: ArrivalSpec) -> WorkloadSpec:
    """A catalog trace workload; explicit SLO and length options override the catalog's."""
    if args.prompt_len or args.output_len or args.prefix_groups or args.prefix_tokens:
        raise ValueError(f"--workload {name} takes its lengths from its trace")
    spec = trace_workload_spec(
        name, args.num_requests or 1, arrivals, args.seed, context_tokens=args.context_tokens
    )
    assert spec.trace is not None
    changes: dict[str, Any] = {
        "num_requests": args.num_requests or _trace_len(spec.trace),
        "max_prompt_tokens": getattr(args, "max_prompt_len", None),
        "max_output_tokens": getattr(args, "max_output_len", None),
    }
    if args.slo_mix or args.slo_ttft is not None or args.slo_tbt is not None:
        changes.update(slo_classes=_slo_classes(args), slo_rule=None)
    if args.disconnect_share:
        changes["disconnect"] = DisconnectSpec(args.disconnect_share, args.disconnect_after)
    return _with_blocks(args, replace(spec, **changes))


def _trace_len(path: str) -> int:
    from loadgen.mooncake import is_mooncake_path, read_mooncake
    from loadgen.traces import read_trace

    return len(read_mooncake(path) if is_mooncake_path(path) else read_trace(path))


def _slo_classes(args: argparse.Namespace) -> tuple[SloClass, ...]:
    if args.slo_mix:
        if args.slo_ttft is not None or args.slo_tbt is not None:
            raise ValueError("give either --slo-mix or --slo-ttft/--slo-tbt")
        return parse_slo_mix(args.slo_mix)
    if args.slo_ttft is None or args.slo_tbt is None:
        raise ValueError("give --slo-ttft and --slo-tbt (seconds), or --slo-mix")
    return (SloClass(args.slo_ttft, args.slo_tbt),)


def _config(
    args: argparse.Namespace, target: Target, spec: WorkloadSpec, items: Sequence[WorkItem]
) -> dict[str, Any]:
    config = {k: v for k, v in vars(args).items() if k not in ("func", "api_key")}
    config.update(
        model=target.model,
        label=args.label or target.root,
        arrivals_description=spec.arrivals.describe(),
        source_note=source_note(spec.trace, args.workload),
        workload_notes=clip_summary(items),
    )
    return config


def _report_clipping(items: Sequence[WorkItem], spec: WorkloadSpec) -> None:
    notes = clip_summary(items)
    if notes["clipped_prompts"]:
        print(
            f"note: {notes['clipped_prompts']} prompt(s) clipped to the "
            f"{spec.context_tokens}-token context ({notes['clipped_tokens']} tokens in all)",
            file=sys.stderr,
        )


async def _session_main(args: argparse.Namespace, body: Body) -> int:
    stop = asyncio.Event()
    _install_stop(stop)
    async with make_session() as session:
        root = base_url(args.url)
        model = args.model or await discover_model(session, root, args.api_key)
        target = Target(root, model, args.endpoint, args.api_key)
        counter = await make_counter(session, target, args.tokenizer, args.tokenize_url)
        return await body(session, target, counter, stop)


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except ValueError as exc:  # includes TraceError
        raise UsageError(str(exc)) from None


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        logging.getLogger("loadgen").warning("stopping: writing what was measured so far")
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C kills

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
        loop.add_signal_handler(signal.SIGINT, on_sigint)


def _check_endpoint(args: argparse.Namespace, items: Sequence[WorkItem]) -> None:
    if args.endpoint == "chat" and any(it.blocks for it in items):
        raise ValueError("a block trace sends token-id prompts: use --endpoint completions")
    if args.slo_headers == "class":
        varied: dict[str, set[tuple[float, float]]] = {}
        for it in items:
            varied.setdefault(it.slo_class, set()).add((it.slo_ttft_s, it.slo_tbt_s))
        if any(len(slos) > 1 for slos in varied.values()):
            raise ValueError("--slo-headers class: a class here has per-request SLOs; use numbers")


def _options(args: argparse.Namespace) -> RunOptions:
    progress = not args.no_progress
    return RunOptions(args.max_concurrency, args.request_timeout, progress, args.slo_headers)


def cmd_run(args: argparse.Namespace) -> int:
    with _usage_errors():
        spec = workload_spec(args, args.rate)
        items = build_workload(spec)  # validated before any connection is made
        _check_endpoint(args, items)
    _report_clipping(items, spec)
    options = _options(args)

    async def body(
        session: aiohttp.ClientSession, target: Target, counter: TokenCounter, stop: asyncio.Event
    ) -> int:
        result = await measure(
            session, target, items, counter, options, prompt_seed=str(spec.seed), stop=stop
        )
        run = SweepPoint(args.rate or 0.0, result.records, result.duration_s, result.interrupted)
        point = point_document(run)
        point["rate"] = args.rate  # None for a trace at its own pace
        point["summary"]["not_sent"] = result.not_sent
        doc = {"kind": "run", "config": _config(args, target, spec, items), **point}
        write_json(args.out, doc)
        print(format_summary(point["summary"], title=f"loadgen run -> {args.out}"))
        return 130 if result.interrupted else 0

    return run_async(_session_main(args, body))


def cmd_sweep(args: argparse.Namespace) -> int:
    with _usage_errors():
        rates = parse_rates(args.rates)
        spec = workload_spec(args, rates[0])
        items = build_workload(spec)  # validated before any connection is made
        _check_endpoint(args, items)
    _report_clipping(items, spec)
    options = _options(args)

    async def body(
        session: aiohttp.ClientSession, target: Target, counter: TokenCounter, stop: asyncio.Event
    ) -> int:
        config = _config(args, target, spec, items)
        done: list[dict[str, Any]] = []

        def on_point(point: dict[str, Any]) -> None:
            done.append(point)
            write_json(args.out, sweep_document(config, done))  # partial results survive
            s = point["summary"]
            print(f"rate {point['rate']:g}: attainment {s['slo_attainment']}", file=sys.stderr)

        await run_sweep(
            session,
            target,
            spec,
            rates,
            counter,
            options,
            stop=stop,
            cooldown_s=args.cooldown,
            on_point=on_point,
        )
        doc = sweep_document(config, done)
        write_json(args.out, doc)
        print(format_sweep(done, doc))
        return 130 if stop.is_set() else 0

    return run_async(_session_main(args, body))


def cmd_plot(args: argparse.Namespace) -> int:
    from loadgen.plot import plot_files

    for path in plot_files(args.results, args.out):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="loadgen: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"loadgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (aiohttp.ClientError, OSError, RuntimeError) as exc:
        print(f"loadgen {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
