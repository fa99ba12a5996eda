"""The ``ascendra-proxy`` command.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires names to modules, and imports a module only when
its subcommand runs (so ``ascendra-proxy check-config`` never imports lightgbm or docker).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("ascendra_proxy.proxy.cli", "run the proxy in front of the configured pools"),
    "scheduler": (
        "ascendra_proxy.scaleout.cli",
        "hold the policy's global state for stream workers (serve --scheduler)",
    ),
    "check-config": ("ascendra_proxy.config_cli", "validate a proxy config file and exit"),
    "status": (
        "ascendra_proxy.proxy.status_cli",
        "show backends and in-flight requests of a running proxy",
    ),
    "emulate": ("ascendra_proxy.emulator.cli", "serve an emulated vLLM or SGLang engine"),
    "simulate": (
        "ascendra_proxy.sim.cli",
        "run the policies against the engine model in virtual time",
    ),
    "train": ("ascendra_proxy.predictor.cli", "train the LightGBM slack predictor"),
    "launch": (
        "ascendra_proxy.launcher.cli",
        "start engine containers on designated GPUs, then serve",
    ),
    "demo": (
        "ascendra_proxy.demo",
        "proxy + emulated engines + a load run + a report, in one process tree",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ascendra-proxy",
        description="An SLO-aware OpenAI-compatible proxy in front of vLLM and SGLang pools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in SUBCOMMANDS:
        parser = build_parser()
        if args and args[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"ascendra-proxy: unknown command {args[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = args[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"ascendra-proxy {name}", description=SUBCOMMANDS[name][1]
    )
    module.add_arguments(parser)
    ns = parser.parse_args(args[1:])
    return int(module.run(ns))


if __name__ == "__main__":
    raise SystemExit(main())
