"""Live backends: per-backend connection pool, adapter, breaker, monitor and exact counts.

Theory of operation: ``Backends.start`` builds one ``BackendRuntime`` per configured backend,
each with its own aiohttp ``ClientSession`` (one connection pool per backend, unlimited size,
long keep-alive, no automatic decompression), the engine's adapter, a circuit breaker, and a
``BackendMonitor`` whose probe and scrape loops run as tasks owned here.  ``Backends.close``
cancels and awaits those tasks, then closes the sessions: nothing is left running.

``BackendRuntime`` also holds the proxy's own exact load counts, changed only through
``begin``/``first_token``/``end`` by the gateway: requests dispatched and not finished
(``inflight``) and the prompt tokens of those still waiting for a first token
(``queued_prompt_tokens``).  ``proxy/load.py`` turns these plus the monitor's scraped load
into the snapshots policies see.  Requests never name a backend URL: the URL comes from the
config, and the only credentials sent upstream are the backend's own ``api_key``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import aiohttp

from ascendra_proxy.backends import adapter_for
from ascendra_proxy.backends.base import EngineAdapter
from ascendra_proxy.backends.health import BackendMonitor, CircuitBreaker, MonitorSettings
from ascendra_proxy.config import BackendConfig, PoolConfig, ProxyConfig
from ascendra_proxy.core.backend import BackendInfo, InflightCounts

# Idle pooled connections are dropped before the engine drops them: vLLM's uvicorn closes
# after VLLM_HTTP_TIMEOUT_KEEP_ALIVE = 5 s, and a request written just as it does fails with
# "server disconnected" before the first byte (a retry elsewhere, or a 502 with one backend).
KEEPALIVE_S = 4.0


class BackendRuntime(InflightCounts):
    def __init__(
        self,
        pool: PoolConfig,
        cfg: BackendConfig,
        session: aiohttp.ClientSession,
        breaker: CircuitBreaker,
        monitor: BackendMonitor,
        adapter: EngineAdapter,
    ) -> None:
        self.name = cfg.name
        self.pool = pool
        self.cfg = cfg
        self.info: BackendInfo = cfg.info(pool)
        self.url = cfg.url
        self.session = session
        self.breaker = breaker
        self.monitor = monitor
        self.adapter = adapter
        super().__init__()
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        self.headers = headers
        self.stream_headers = {**headers, "Accept": "text/event-stream"}


def _session(cfg: ProxyConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=cfg.timeouts.connect_s, connect=cfg.timeouts.connect_s
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )


class Backends:
    """Every live backend, in config order, with the background tasks that watch them."""

    def __init__(self, runtimes: list[BackendRuntime]) -> None:
        self._by_name = {r.name: r for r in runtimes}
        self._order = runtimes
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def build(cls, cfg: ProxyConfig, clock: Callable[[], float]) -> Backends:
        settings = MonitorSettings(
            health_interval_s=cfg.health.interval_s,
            health_timeout_s=cfg.health.timeout_s,
            scrape_interval_s=cfg.scrape.interval_s,
            scrape_timeout_s=cfg.scrape.timeout_s,
        )
        runtimes = []
        for pool, b in cfg.backends():
            session = _session(cfg)
            adapter = adapter_for(b.engine)
            breaker = CircuitBreaker(cfg.health.failure_threshold, cfg.health.cooldown_s)
            monitor = BackendMonitor(b.name, b.url, adapter, session, breaker, settings, clock)
            runtimes.append(BackendRuntime(pool, b, session, breaker, monitor, adapter))
        return cls(runtimes)

    def __iter__(self) -> Iterator[BackendRuntime]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def get(self, name: str) -> BackendRuntime | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return [r.name for r in self._order]

    def start_monitors(self) -> None:
        for r in self._order:
            for loop in (r.monitor.run_health, r.monitor.run_scrape):
                task = asyncio.create_task(loop(), name=f"{loop.__name__}:{r.name}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for r in self._order:
            await r.session.close()
