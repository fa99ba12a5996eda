"""``ascendra-proxy serve --config FILE [--host H] [--port P]``: run the proxy."""

from __future__ import annotations

import argparse
import logging
import sys

from ascendra_proxy.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="proxy config YAML file")
    parser.add_argument("--host", help="listen address (default: listen.host from the config)")
    parser.add_argument("--port", type=int, help="listen port (default: listen.port; 0 = any)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"ascendra-proxy: {args.config}: {exc}", file=sys.stderr)
        return 2
    from ascendra_proxy.proxy.app import serve

    serve(cfg, host=args.host, port=args.port)
    return 0
