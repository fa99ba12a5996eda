"""``ascendra-proxy serve --config FILE [--host H] [--port P]``: run the proxy.

One process by default.  ``--workers N`` (N > 1) runs N stream workers sharing the port and
one scheduler beside them (``scaleout/supervisor.py``); ``--scheduler ADDR`` (repeatable:
the leader and its standbys) makes this process, or the N workers, use schedulers that run
elsewhere (``ascendra-proxy scheduler``).
"""

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
    parser.add_argument(
        "--workers", type=int, default=1, help="stream worker processes sharing the port"
    )
    parser.add_argument(
        "--scheduler",
        action="append",
        default=[],
        metavar="ADDR",
        help="scheduler address (unix:/PATH or ws://HOST:PORT); repeat for standbys",
    )
    parser.add_argument(
        "--worker-port-base",
        type=int,
        help="with --workers: worker i also listens on this port + i (its own /metrics)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--private-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--request-log",
        metavar="FILE",
        help="append one JSON line per finished request (waits, route, moves, outcome)",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"ascendra-proxy: {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("ascendra-proxy: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and args.request_log:
        print("ascendra-proxy: --request-log needs --workers 1", file=sys.stderr)
        return 2
    host = cfg.listen.host if args.host is None else args.host
    port = cfg.listen.port if args.port is None else args.port
    if args.workers > 1:
        from ascendra_proxy.scaleout.supervisor import Supervisor

        sup = Supervisor(
            args.config,
            host,
            port,
            args.workers,
            tuple(args.scheduler),
            args.worker_port_base,
            args.log_level,
        )
        return sup.run()
    from ascendra_proxy.proxy.app import serve
    from ascendra_proxy.scaleout.worker import WorkerOptions

    worker = None
    if args.scheduler:
        worker = WorkerOptions(
            tuple(args.scheduler), reuse_port=args.reuse_port, private_port=args.private_port
        )
    serve(cfg, host=host, port=port, worker=worker, request_log=args.request_log)
    return 0
