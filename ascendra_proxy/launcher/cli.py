"""``ascendra-proxy launch``: engine containers on designated GPUs, then the proxy.

Theory of operation.  The config is loaded and validated like ``serve`` does (a GPU listed
twice is a config error).  :func:`plan_launch` turns it into container specs; ``--dry-run``
prints them and stops there (no Docker needed).  Otherwise the driver checks the Docker
engine, images, GPUs and ports, starts one container per backend with ``gpu_ids``, waits
until each answers ``GET /health``, and then runs the proxy in this process through
``serve``'s own entry point until SIGINT/SIGTERM.  Whatever happens after the first
container starts (an engine that crashes, a timeout, Ctrl-C, SIGTERM, the proxy returning),
the ``finally`` block stops and removes the containers of this launch, found by its run id
label (:mod:`ascendra_proxy.launcher.interrupts` makes Ctrl-C and SIGTERM unwind to it).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from ascendra_proxy.config import ConfigError, load_config
from ascendra_proxy.launcher.interrupts import Interrupted, InterruptGuard, sigterm_ignored
from ascendra_proxy.launcher.plan import (
    DEFAULT_EMULATOR_IMAGE,
    DEFAULT_SGLANG_IMAGE,
    DEFAULT_VLLM_IMAGE,
    LaunchError,
    LaunchOptions,
    LaunchPlan,
    plan_launch,
)
from ascendra_proxy.launcher.render import render_plan

__all__ = ["add_arguments", "options_from_args", "run"]

PASSED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # copied into engines when set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--config", help="proxy config; backends with gpu_ids get an engine container")
    a("--dry-run", action="store_true", help="print what would start, without Docker")
    a("--image-vllm", default=DEFAULT_VLLM_IMAGE, help="vLLM engine image")
    a("--image-sglang", default=DEFAULT_SGLANG_IMAGE, help="SGLang engine image")
    a("--emulate", action="store_true", help="run this project's emulator in the containers")
    a("--emulator-image", default=DEFAULT_EMULATOR_IMAGE, help="image used with --emulate")
    a(
        "--model-cache",
        default=None,
        help="host directory shared by the engines as their Hugging Face cache "
        "(default: $HF_HOME or ~/.cache/huggingface; 'none' for no mount)",
    )
    a(
        "--weights",
        action="append",
        default=[],
        metavar="MODEL=SOURCE",
        help="weights (HF id or path in the container) for a served model name; default: "
        "the model name itself (repeatable)",
    )
    a("--engine-env", action="append", default=[], metavar="KEY=VALUE", help="engine env var")
    a(
        "--no-gpu-requests",
        action="store_true",
        help="start the containers without claiming GPUs (machines without the NVIDIA "
        "runtime, with --emulate)",
    )
    a("--health-timeout", type=float, default=1200.0, help="seconds for engines to get healthy")
    a("--host", help="proxy listen address (default: listen.host of the config)")
    a("--port", type=int, help="proxy listen port (default: listen.port of the config)")
    a("--log-level", default="INFO", help="proxy logging level")
    a("--run-id", default=None, help="label of this launch (default: random)")
    a("--cleanup", action="store_true", help="stop and remove every launcher container, exit")


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _model_cache(value: str | None) -> str | None:
    if value == "none":
        return None
    if value:
        return str(Path(value).expanduser().resolve())
    home = os.environ.get("HF_HOME")
    return str(Path(home) if home else Path.home() / ".cache" / "huggingface")


def options_from_args(args: argparse.Namespace) -> LaunchOptions:
    env = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    env.update(_pairs(args.engine_env, "--engine-env"))
    return LaunchOptions(
        run_id=args.run_id or uuid.uuid4().hex[:8],
        image_vllm=args.image_vllm,
        image_sglang=args.image_sglang,
        emulate=args.emulate,
        emulator_image=args.emulator_image,
        model_cache=None if args.emulate else _model_cache(args.model_cache),
        weights=_pairs(args.weights, "--weights"),
        env=env,
    )


def _log(message: str) -> None:
    print(f"launch: {message}", file=sys.stderr, flush=True)


def _serve(args: argparse.Namespace) -> int:
    from ascendra_proxy.proxy import cli as proxy_cli

    parser = argparse.ArgumentParser(prog="ascendra-proxy serve")
    proxy_cli.add_arguments(parser)
    argv = ["--config", args.config, "--log-level", args.log_level]
    if args.host:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    return int(proxy_cli.run(parser.parse_args(argv)))


def _launch(args: argparse.Namespace, plan: LaunchPlan) -> int:
    from ascendra_proxy.launcher.driver import connect

    driver = connect(_log, gpu_requests=not args.no_gpu_requests)
    driver.preflight(plan)
    guard = InterruptGuard()
    try:
        # Until the proxy's event loop takes the signals over (and after it gives them
        # back), SIGINT/SIGTERM unwind to the cleanup below instead of killing the process.
        with guard.installed():
            for spec in plan.containers:
                with guard.held():
                    driver.start(spec)
            driver.wait_healthy(plan.containers, args.health_timeout)
            _log(f"all {len(plan.containers)} engines healthy; serving the proxy")
            return _serve(args)
    except (KeyboardInterrupt, Interrupted) as exc:
        _log(f"interrupted ({exc or 'SIGINT'})")
        return 130
    finally:
        with sigterm_ignored():
            try:
                n = driver.stop_run(plan.run_id)
                _log(f"stopped and removed {n} container(s) of launch {plan.run_id}")
            except KeyboardInterrupt:
                _log("cleanup interrupted; remove leftovers with `ascendra-proxy launch --cleanup`")


def run(args: argparse.Namespace) -> int:
    try:
        if args.cleanup:
            from ascendra_proxy.launcher.driver import connect

            n = connect(_log).stop_all()
            _log(f"stopped and removed {n} launcher container(s)")
            return 0
        if not args.config:
            raise LaunchError("--config is required (or --cleanup)")
        opts = options_from_args(args)
        plan = plan_launch(load_config(args.config), opts)
        if args.dry_run:
            sys.stdout.write(render_plan(plan))
            return 0
        return _launch(args, plan)
    except ConfigError as exc:
        print(f"ascendra-proxy launch: {args.config}: {exc}", file=sys.stderr)
        return 2
    except (LaunchError, OSError) as exc:
        print(f"ascendra-proxy launch: {exc}", file=sys.stderr)
        return 1
