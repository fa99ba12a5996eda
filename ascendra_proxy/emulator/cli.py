"""``ascendra-proxy emulate``: serve an emulated vLLM or SGLang engine.

Theory of operation: the arguments become an :class:`EmulatorConfig`; the server runs on
uvloop (when installed) with ``handler_cancellation=True`` so client hang-ups abort requests.
Once listening it prints one line ``listening on http://HOST:PORT`` on stdout (with
``--port 0`` this is how a parent process learns the port), then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from ascendra_proxy.emulator.config import EmulatorConfig
from ascendra_proxy.emulator.faults import parse_fault_specs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--flavor", choices=("vllm", "sglang"), default="vllm", help="wire format to speak")
    a("--profile", default="a100-llama3-8b", help="latency profile name or YAML path")
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=8001, help="0 picks a free port (printed on start)")
    a("--model", default=None, help="served model name (default: the profile name)")
    a("--scheduling-policy", choices=("fcfs", "priority"), default="fcfs")
    a("--max-num-seqs", type=int, default=None)
    a("--max-num-batched-tokens", type=int, default=None)
    a("--num-gpu-blocks", type=int, default=None, help="KV blocks (default: profile capacity)")
    a("--block-size", type=int, default=None)
    a("--max-model-len", type=int, default=None)
    a("--no-prefix-caching", action="store_true", help="disable automatic prefix caching")
    a("--eos-rate", type=float, default=None, help="per-token EOS probability")
    a("--seed", type=int, default=0)
    a(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply modelled step times (0.01 = 100x faster, 0 = as fast as possible)",
    )
    a(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="crash-after-tokens=N | crash-after-s=T | crash-recover-s=R | stall=T[@AFTER] | "
        "error-rate=P | error-status=CODE | refuse (repeatable)",
    )
    a(
        "--no-prompt-tokens-details",
        action="store_true",
        help="omit usage.prompt_tokens_details (vLLM without --enable-prompt-tokens-details)",
    )
    a(
        "--sglang-abort-delay",
        type=float,
        default=1.0,
        help="SGLang flavour: seconds from a client disconnect to the abort",
    )
    a(
        "--schedule-low-priority-values-first",
        action="store_true",
        help="SGLang flavour: lower priority values first (vLLM's convention)",
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        flavor=args.flavor,
        profile=args.profile,
        model=args.model,
        host=args.host,
        port=args.port,
        scheduling_policy=args.scheduling_policy,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        num_gpu_blocks=args.num_gpu_blocks,
        block_size=args.block_size,
        max_model_len=args.max_model_len,
        enable_prefix_caching=not args.no_prefix_caching,
        eos_rate=args.eos_rate,
        seed=args.seed,
        time_scale=args.time_scale,
        faults=parse_fault_specs(args.fault),
        prompt_tokens_details=not args.no_prompt_tokens_details,
        sglang_abort_delay_s=args.sglang_abort_delay,
        sglang_low_priority_values_first=args.schedule_low_priority_values_first,
    )


async def serve(cfg: EmulatorConfig) -> None:
    from ascendra_proxy.emulator.server import start_site

    runner, running = await start_site(cfg)
    print(f"listening on {running.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(cfg))
        else:
            uvloop.run(serve(cfg))
    except ValueError as exc:  # bad profile, engine settings or fault specs
        print(f"ascendra-proxy emulate: {exc}", file=sys.stderr)
        return 2
    return 0
