"""The proxy application: ``create_app(config)`` wires everything, ``serve`` runs it.

Theory of operation: ``create_app`` builds the aiohttp ``Application`` with typed keys, the
error middleware (the only middleware: nothing runs per chunk), the body-size limit and the
routes.  Everything that needs a running loop (connection pools, background monitors, the
policy tick, the learned predictor's model watch, training rows and retraining worker:
``proxy/learning.py``) is created in a cleanup context at startup and torn down in reverse
order at shutdown: tick task cancelled, pending upstream aborts drained, training rows
written and the retraining worker stopped, monitor tasks cancelled and awaited, sessions
closed.

``serve`` runs the app under uvloop when it is installed, with ``handler_cancellation`` on:
aiohttp then cancels a handler the moment its client disconnects, which is what lets the
proxy abort the upstream request during a long prefill, when no byte is flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.proxy import handlers, passthrough
from ascendra_proxy.proxy.auth import Auth
from ascendra_proxy.proxy.connections import ConnectionGuard, GuardedTCPSite, open_file_warning
from ascendra_proxy.proxy.errors import error_middleware
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.keys import CONTEXT, GATEWAY, ProxyContext
from ascendra_proxy.proxy.learning import Learning
from ascendra_proxy.proxy.request_log import RequestLog
from ascendra_proxy.proxy.runtime import Backends
from ascendra_proxy.proxy.telemetry import GaugeSample, Telemetry
from ascendra_proxy.proxy.ticker import run_ticks
from ascendra_proxy.scaleout.worker import WORKER, WorkerOptions, attach_worker, worker_config

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
REQUEST_LOG_PATH = web.AppKey("ascendra_request_log", str)  # "" when off


def create_app(
    config: ProxyConfig, worker: WorkerOptions | None = None, request_log: str | None = None
) -> web.Application:
    """The proxy app; with ``worker`` options it is a stream worker of a remote scheduler;
    ``request_log``: the file that gets a JSON line per finished request."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.limits.max_body_bytes
    )
    app[REQUEST_LOG_PATH] = request_log or ""
    app[CONTEXT] = ProxyContext(
        cfg=config,
        auth=Auth(
            config.auth.api_keys,
            config.auth.admin_key,
            [(c.key, c.access()) for c in config.auth.clients],
            config.auth.default_slo_access.access(),
        ),
        models=frozenset(config.models()),
        slo_table=config.slo_table(),
        max_body_bytes=config.limits.max_body_bytes,
        started=handlers.unix_now(),
    )
    if worker is not None:
        app[WORKER] = worker
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_get("/v1/models", passthrough.models)
    app.router.add_get("/v1/models/{model}", passthrough.model)
    app.router.add_post("/v1/responses", passthrough.responses)
    app.router.add_post("/tokenize", passthrough.tokenize)
    app.router.add_post("/detokenize", passthrough.detokenize)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/admin/backends", handlers.admin_backends)
    app.router.add_get("/admin/requests", handlers.admin_requests)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONTEXT].cfg
    clock = asyncio.get_running_loop().time
    backends = Backends.build(cfg, clock)
    telemetry = Telemetry(
        backends.names(),
        models=cfg.models(),
        slo_classes=cfg.slo.classes,
        backend_models={b.name: b.model for _, b in cfg.backends()},
    )
    worker = app.get(WORKER)
    if worker is not None and worker.schedulers:
        cfg = worker_config(cfg, worker.name or f"worker-{os.getpid()}")
    policy = cfg.make_policy()
    remote = None if worker is None else worker.policy(cfg, policy)
    if remote is not None:
        policy = remote
    learning = Learning(cfg, policy, telemetry.registry)
    gateway = Gateway(cfg, backends, policy, telemetry, clock)
    gateway.learning, gateway.observer = learning, learning.tap
    telemetry.gauges = lambda: _gauges(gateway)
    app[GATEWAY] = gateway
    if log_path := app[REQUEST_LOG_PATH]:
        gateway.request_log = RequestLog(log_path)
    backends.start_monitors()
    ticks = asyncio.create_task(run_ticks(gateway), name="policy-tick")
    link = None if worker is None or remote is None else attach_worker(gateway, remote, worker)
    try:
        yield
    finally:
        ticks.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticks
        if link is not None:
            await link.close()
        await gateway.close()
        if gateway.request_log is not None:
            gateway.request_log.close()
        await learning.close()
        await backends.close()


def _gauges(gw: Gateway) -> Iterator[GaugeSample]:
    now = gw.clock()
    for r in gw.backends:
        labels = {"backend": r.name}
        yield GaugeSample(
            "backend_inflight", "Requests in flight (proxy count)", labels, r.inflight
        )
        yield GaugeSample(
            "backend_queued_prompt_tokens",
            "Prompt tokens of requests without a first token",
            labels,
            r.queued_prompt_tokens,
        )
        yield GaugeSample(
            "backend_healthy",
            "1 if the breaker lets requests through",
            labels,
            float(r.breaker.available(now)),
        )
        age = r.monitor.load_age(now)
        if age is not None:
            yield GaugeSample("backend_scrape_age_seconds", "Age of scraped load", labels, age)
    yield GaugeSample("proxy_queued_requests", "Requests held in the proxy queue", {}, gw.held)
    yield GaugeSample(
        "proxy_inflight_requests", "Admitted, unfinished requests", {}, len(gw.flights)
    )


async def start_server(
    config: ProxyConfig,
    host: str,
    port: int,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    worker: WorkerOptions | None = None,
    request_log: str | None = None,
) -> tuple[web.AppRunner, list[tuple[str, int]]]:
    """Serve ``config`` on host:port (0: any free port); returns the runner and bound addresses.

    At shutdown, open streams get ``shutdown_grace_s`` to finish before they are cancelled.
    A stream worker (``worker``) shares its port with its siblings (``SO_REUSEPORT``).
    """
    runner = web.AppRunner(
        create_app(config, worker, request_log),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=shutdown_grace_s,
    )
    await runner.setup()
    reuse = worker is not None and worker.reuse_port
    guard = ConnectionGuard(config.connections, runner.app[GATEWAY].telemetry.connections)
    if (problem := open_file_warning(config.connections)) is not None:
        log.warning("%s", problem)
    site = GuardedTCPSite(runner, host, port, guard, backlog=4096, reuse_port=reuse or None)
    await site.start()
    server = site._server
    addrs = [s.getsockname()[:2] for s in getattr(server, "sockets", None) or ()]
    if worker is not None and worker.private_port is not None:
        await web.TCPSite(runner, host, worker.private_port).start()
    return runner, addrs


async def _serve_until_signalled(
    config: ProxyConfig,
    host: str,
    port: int,
    worker: WorkerOptions | None,
    request_log: str | None = None,
) -> None:
    runner, addrs = await start_server(config, host, port, worker=worker, request_log=request_log)
    gc.freeze()  # startup objects never die: keep them out of every later collection
    for h, p in addrs:
        print(f"ascendra-proxy listening on http://{h}:{p}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    config: ProxyConfig,
    host: str | None = None,
    port: int | None = None,
    worker: WorkerOptions | None = None,
    request_log: str | None = None,
) -> None:
    """Run the proxy (or one stream worker) until SIGINT/SIGTERM (uvloop when available);
    ``request_log``: the file that gets a JSON line per finished request."""
    host = config.listen.host if host is None else host
    port = config.listen.port if port is None else port
    main = _serve_until_signalled(config, host, port, worker, request_log)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
