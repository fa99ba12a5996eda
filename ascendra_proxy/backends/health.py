"""Backend health: a circuit breaker fed by probes and by real traffic, plus the load scraper.

Theory of operation: each backend has one ``CircuitBreaker``.  It is *closed* (usable) until
``failure_threshold`` consecutive failures; then *open* (skipped by routing, requests to it
fail fast with ``CircuitOpen``) for ``cooldown_s``; then *half-open*: usable again, and the
next outcome decides: a success closes it, a failure opens it for another cooldown.
Failures come from the periodic ``GET /health`` probe and from the data plane (connect
errors, 5xx, first-byte timeouts); any answer from the engine that is not a server error
or a redirect counts as a success.  No call to a backend follows a redirect: a 3xx is a
failure of that backend, never a new target for the prompt or the probe.  The breaker
takes ``now`` as an argument and never reads a clock.

``BackendMonitor`` owns the two background loops of one backend: the health probe and the
``/metrics`` scrape.  The scrape keeps the last good ``EngineLoad`` with the time it was
taken, so every consumer sees the signal together with its age; a failing scrape leaves the
old value in place to grow old (engines without metrics simply never report load).  The
loops run until cancelled; their owner (the proxy app) cancels and awaits them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from ascendra_proxy.backends.base import EngineAdapter
from ascendra_proxy.backends.scrape import EngineLoad

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_cooldown_s", "_opened_at", "_threshold", "failures", "opened_count")

    def __init__(self, failure_threshold: int, cooldown_s: float) -> None:
        self._threshold = max(1, failure_threshold)
        self._cooldown_s = cooldown_s
        self._opened_at: float | None = None
        self.failures = 0
        self.opened_count = 0

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at < self._cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def available(self, now: float) -> bool:
        return self.state(now) is not BreakerState.OPEN

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at = None

    def record_failure(self, now: float) -> None:
        self.failures += 1
        half_open = self.state(now) is BreakerState.HALF_OPEN
        if half_open or (self._opened_at is None and self.failures >= self._threshold):
            self._opened_at = now
            self.opened_count += 1


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    health_interval_s: float
    health_timeout_s: float
    scrape_interval_s: float
    scrape_timeout_s: float


class BackendMonitor:
    """Health probe and load scrape loops of one backend."""

    def __init__(
        self,
        name: str,
        base_url: str,
        adapter: EngineAdapter,
        session: aiohttp.ClientSession,
        breaker: CircuitBreaker,
        settings: MonitorSettings,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self._base_url = base_url
        self._adapter = adapter
        self._session = session
        self._breaker = breaker
        self._settings = settings
        self._clock = clock
        self.load: EngineLoad | None = None
        self.scraped_at: float | None = None
        self.scrape_errors = 0
        self.last_probe_ok: bool | None = None

    def load_age(self, now: float) -> float | None:
        return None if self.scraped_at is None else max(0.0, now - self.scraped_at)

    async def probe_once(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=self._settings.health_timeout_s)
        try:
            async with self._session.get(
                self._base_url + self._adapter.health_path, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                ok = resp.status < 300 or 400 <= resp.status < 500
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            self._breaker.record_success()
        else:
            self._breaker.record_failure(self._clock())
        self.last_probe_ok = ok
        return ok

    async def scrape_once(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=self._settings.scrape_timeout_s)
        try:
            async with self._session.get(
                self._base_url + self._adapter.metrics_path, timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    self.scrape_errors += 1
                    return False
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            self.scrape_errors += 1
            return False
        self.load = self._adapter.parse_metrics(text)
        self.scraped_at = self._clock()
        return True

    async def run_health(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self._settings.health_interval_s)

    async def run_scrape(self) -> None:
        while True:
            ok = await self.scrape_once()
            if not ok and self.scrape_errors in (1, 100):
                log.info("backend %s: /metrics scrape failing (load unknown)", self.name)
            await asyncio.sleep(self._settings.scrape_interval_s)
