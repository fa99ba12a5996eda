"""``ascendra-proxy scheduler``: the policy's global state for stream workers.

``--listen unix:/PATH`` (workers on this machine) or ``--listen ws://HOST:PORT`` (workers
anywhere).  ``--elector static`` leads at once (one scheduler); ``--elector redis --redis
URL`` takes part in a lease election, so a standby can take over; ``--elector k8s`` does the
same on a Kubernetes Lease (in a pod, with the service account's credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from ascendra_proxy.config import ConfigError, ProxyConfig, load_config
from ascendra_proxy.scaleout.lease import Elector, RedisElector, StaticElector
from ascendra_proxy.scaleout.scheduler import PROGRESS_S, SchedulerServer
from ascendra_proxy.scaleout.transport import parse_address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="proxy config YAML file")
    parser.add_argument(
        "--listen", required=True, help="unix:/PATH or ws://HOST:PORT (port 0: any free port)"
    )
    parser.add_argument("--elector", choices=("static", "redis", "k8s"), default="static")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument(
        "--lease-key",
        default="ascendra:leader",
        help="Redis key of the lease (k8s: the Lease object's name, default ascendra-scheduler)",
    )
    parser.add_argument("--lease-ttl-s", type=float, default=2.0, help="lease time to live")
    parser.add_argument("--name", help="this scheduler's id (default: host-pid)")
    parser.add_argument(
        "--progress-s",
        type=float,
        default=PROGRESS_S,
        help="how often workers report request progress",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config)
        parse_address(args.listen)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"ascendra-proxy scheduler: {exc}", file=sys.stderr)
        return 2
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    elector: Elector
    if args.elector == "redis":
        elector = RedisElector(args.redis, name, args.lease_key, args.lease_ttl_s)
    elif args.elector == "k8s":
        from ascendra_proxy.scaleout.k8s_lease import KubernetesLeaseElector

        lease = "ascendra-scheduler" if args.lease_key == "ascendra:leader" else args.lease_key
        elector = KubernetesLeaseElector.in_cluster(lease, name, args.lease_ttl_s)
    else:
        elector = StaticElector()
    server = SchedulerServer(cfg, name, elector, args.progress_s)
    main = _serve(server, args.listen, cfg)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
    return 0


async def _serve(server: SchedulerServer, listen: str, _cfg: ProxyConfig) -> None:
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    path, base = parse_address(listen)
    site: web.BaseSite
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a killed predecessor
        site = web.UnixSite(runner, path)
    else:
        host, _, port = base.removeprefix("http://").rpartition(":")
        site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    sockets = getattr(site._server, "sockets", None) or ()
    for s in sockets:
        addr = s.getsockname()
        where = addr if isinstance(addr, str) else f"ws://{addr[0]}:{addr[1]}"
        print(f"ascendra-proxy scheduler {server.name} listening on {where}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
