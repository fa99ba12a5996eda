"""One simulated backend: an engine model, the proxy's exact counts, and its scraped gauges.

Theory of operation: :class:`SimBackend` plays both sides of one backend.  The engine side is
an :class:`~ascendra_proxy.engine.EngineModel` stepped in virtual time: :meth:`start_step`
forms and prices one batch (the model advances its requests at once; the simulator delivers
the outputs when the step's duration has passed), and a backend runs one step at a time.
An engine that cannot schedule anything (no KV room) stays idle until a request arrives or
leaves.  The proxy side mirrors ``proxy/runtime.py``'s ``BackendRuntime``: ``inflight`` and
``queued_prompt_tokens`` change only through :meth:`begin`, :meth:`first_token` and
:meth:`end`, and the last ``/metrics`` answer is kept with the time it arrived, so
:meth:`snapshot` hands the policy the same fresh/stale split as ``proxy/load.py`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ascendra_proxy.core.backend import (
    BackendInfo,
    BackendSnapshot,
    InflightCounts,
    ScrapedLoad,
    snapshot_of,
)
from ascendra_proxy.engine import EngineModel, StepResult

__all__ = ["Gauges", "SimBackend"]


@dataclass(frozen=True, slots=True)
class Gauges:
    """What a /metrics scrape reports (vLLM: num_requests_running/waiting, kv usage)."""

    running: int
    waiting: int
    kv_usage: float


class SimBackend(InflightCounts):
    def __init__(self, info: BackendInfo, engine: EngineModel, frontend_s: float) -> None:
        self.info = info
        self.name = info.name
        self.engine = engine
        self.frontend_s = frontend_s
        self.busy = False
        super().__init__()
        self.gauges: Gauges | None = None
        self.scraped_at: float | None = None
        self.busy_s = 0.0
        self.steps = 0

    # -- scraping -------------------------------------------------------------------------

    def read_gauges(self) -> Gauges:
        s = self.engine.stats()
        return Gauges(s.num_running, s.num_waiting, s.kv_usage)

    def store_gauges(self, gauges: Gauges, now: float) -> None:
        self.gauges = gauges
        self.scraped_at = now

    def snapshot(self, now: float, inflight_limit: int | None) -> BackendSnapshot:
        scraped = None
        g = self.gauges
        if g is not None and self.scraped_at is not None:
            age = max(0.0, now - self.scraped_at)
            scraped = ScrapedLoad(
                running=g.running, waiting=g.waiting, kv_usage=g.kv_usage, age_s=age
            )
        return snapshot_of(
            self.info, self, healthy=True, scraped=scraped, inflight_limit=inflight_limit
        )

    # -- engine stepping ------------------------------------------------------------------

    def start_step(self, now: float) -> StepResult | None:
        """Start one step if idle and something can run; the result's outputs are due at
        ``now + duration_s``.  None: busy, idle, or nothing schedulable (KV full)."""
        if self.busy or not self.engine.has_work():
            return None
        res = self.engine.step(now)
        while res.duration_s <= 0.0 and res.preempted and self.engine.has_work():
            res = self.engine.step(now)  # a pass that only preempted; admit from the queue
        if res.duration_s <= 0.0 and not res.outputs:
            return None
        self.busy = True
        self.steps += 1
        self.busy_s += res.duration_s
        return res

    def step_done(self) -> None:
        self.busy = False
