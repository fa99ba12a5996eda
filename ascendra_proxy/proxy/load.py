"""The one place that computes what policies see about backends.

Theory of operation: a ``BackendSnapshot`` combines two kinds of signal, and keeps them
apart so a policy can weigh them: the proxy's own counts (``inflight``,
``queued_prompt_tokens``), exact and fresh because every dispatch and finish passes through
the gateway, and the engine's scraped gauges (running, waiting, KV usage) with their age at
the moment the snapshot is built.  Health is the circuit breaker's view at ``now``.  The
proxy-side in-flight cap (``limits.max_inflight_per_backend``) travels in the snapshot so
the policy, not the driver, decides what to do when everything is full.
"""

from __future__ import annotations

from ascendra_proxy.core.backend import BackendSnapshot, ScrapedLoad, snapshot_of
from ascendra_proxy.proxy.runtime import BackendRuntime, Backends


class LoadBook:
    def __init__(self, backends: Backends, inflight_limit: int | None) -> None:
        self._backends = backends
        self._limit = inflight_limit

    def snapshot(self, r: BackendRuntime, now: float) -> BackendSnapshot:
        healthy = r.breaker.available(now)
        return snapshot_of(
            r.info, r, healthy=healthy, scraped=scraped_load(r, now), inflight_limit=self._limit
        )

    def snapshots(self, now: float) -> list[BackendSnapshot]:
        return [self.snapshot(r, now) for r in self._backends]


def scraped_load(r: BackendRuntime, now: float) -> ScrapedLoad | None:
    load, age = r.monitor.load, r.monitor.load_age(now)
    if load is None or age is None:
        return None
    return ScrapedLoad(
        running=load.running, waiting=load.waiting, kv_usage=load.kv_usage, age_s=age
    )
