"""The scheduler process: the policy's global state behind a WebSocket, for many workers.

Theory of operation.  One asyncio loop owns a :class:`~.brain.Brain` (policy, mirrors,
counts): WebSocket handlers feed it worker messages and a tick task calls its ``tick``
(every ``policy.tick_interval_s``) and ``recheck`` (held requests, every 50 ms); whatever
it returns goes out through each worker's ordered ``Outbox``.  Being single-threaded, the
loop is the single writer, with no locks.

Leadership comes from an elector (``lease.py``).  While this process does not lead it has
no brain: ``/ready`` answers 503 (a Kubernetes Service then routes only to the leader) and
a worker that connects gets ``not_leader``.  On election a fresh brain starts empty with
the new epoch and workers' ``hello`` frames rebuild it; on losing the lease every worker
connection is closed (they move to the new leader).

The scheduler runs the engine monitors (health probes and ``/metrics`` scrapes, one per
backend for the whole pool) and builds snapshots from them plus the workers' counts.  It
serves ``/health`` (alive), ``/ready`` (leading) and ``/metrics`` (Prometheus text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.backend import ScrapedLoad
from ascendra_proxy.proxy.load import scraped_load
from ascendra_proxy.proxy.runtime import Backends
from ascendra_proxy.scaleout.brain import Brain, Outgoing
from ascendra_proxy.scaleout.lease import Elector
from ascendra_proxy.scaleout.messages import (
    Finish,
    Hello,
    NotLeader,
    Progress,
    ProtocolError,
    RouteAsk,
    Welcome,
    decode,
    encode,
)
from ascendra_proxy.scaleout.transport import HEARTBEAT_S, WS_PATH, Outbox

__all__ = ["SchedulerServer"]

log = logging.getLogger(__name__)

RECHECK_S = 0.05
HANDSHAKE_S = 5.0
PROGRESS_S = 0.05


@dataclass(slots=True)
class _Conn:
    ws: web.WebSocketResponse
    out: Outbox


@dataclass(slots=True)
class SchedulerStats:
    messages: dict[str, int] = field(default_factory=dict)
    decisions: int = 0
    elections: int = 0


class SchedulerServer:
    def __init__(
        self, cfg: ProxyConfig, name: str, elector: Elector, progress_s: float = PROGRESS_S
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.elector = elector
        self.progress_s = progress_s
        self.brain: Brain | None = None
        self.conns: dict[str, _Conn] = {}
        self.stats = SchedulerStats()
        self.backends: Backends | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ticks: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[bool]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(WS_PATH, self._ws)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/dispatches", self._dispatches)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    # -- lifecycle ----------------------------------------------------------------------

    async def _lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        self.backends = Backends.build(self.cfg, loop.time)
        self.backends.start_monitors()
        self._tasks.append(loop.create_task(self.elector.run(self._elected, self._lost)))
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.elector.resign()  # after the election loop stopped: no renewal races
            self._lost()
            await self._stop_ticks()
            await self.backends.close()

    def _elected(self, epoch: int) -> None:
        backends = self.backends
        assert backends is not None
        loop = asyncio.get_running_loop()

        def scraped(name: str, now: float) -> ScrapedLoad | None:
            r = backends.get(name)
            return None if r is None else scraped_load(r, now)

        def healthy(name: str, now: float) -> bool:
            r = backends.get(name)
            return r is not None and r.breaker.available(now)

        self.brain = Brain(
            self.cfg.make_policy(),
            self.cfg.backend_infos(),
            epoch,
            scraped=scraped,
            healthy=healthy,
            inflight_limit=self.cfg.limits.max_inflight_per_backend,
        )
        self.stats.elections += 1
        self._ticks = loop.create_task(self._tick_loop(self.brain), name="scheduler-tick")

    def _lost(self) -> None:
        self.brain = None
        if self._ticks is not None:
            self._ticks.cancel()
        loop = asyncio.get_running_loop()
        for conn in list(self.conns.values()):  # workers move to the new leader
            task = loop.create_task(conn.ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.conns.clear()

    async def _stop_ticks(self) -> None:
        if self._ticks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks

    async def _tick_loop(self, brain: Brain) -> None:
        loop = asyncio.get_running_loop()
        policy_tick = brain.policy.tick_interval_s
        period = min(policy_tick or RECHECK_S, RECHECK_S)
        next_recheck = loop.time()
        while self.brain is brain:
            await asyncio.sleep(period)
            now = loop.time()
            try:
                out = brain.tick(now) if policy_tick is not None else []
                if now >= next_recheck:
                    out += brain.recheck(now)
                    next_recheck = now + RECHECK_S
            except Exception:
                log.exception("policy tick failed")
                continue
            self._send(out)

    # -- workers ------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        try:
            hello = decode(await ws.receive_bytes(timeout=HANDSHAKE_S))
        except (TimeoutError, ProtocolError, TypeError) as exc:
            log.warning("bad handshake: %s", exc)
            await ws.close()
            return ws
        brain = self.brain
        if not isinstance(hello, Hello) or brain is None:
            await ws.send_bytes(encode(NotLeader(self.name)))
            await ws.close()
            return ws
        await self._serve_worker(ws, hello, brain)
        return ws

    async def _serve_worker(self, ws: web.WebSocketResponse, hello: Hello, brain: Brain) -> None:
        loop = asyncio.get_running_loop()
        worker = hello.worker
        old = self.conns.pop(worker, None)
        if old is not None:
            await old.ws.close()
        conn = _Conn(ws, Outbox(ws))
        self.conns[worker] = conn
        rows = brain.policy.tick_interval_s is not None  # only a tick reviews running requests
        conn.out.put(Welcome(brain.epoch, self.name, self.progress_s, rows))
        self._send(brain.connect(worker, hello, loop.time()))
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.BINARY or self.brain is not brain:
                    break
                msg = decode(frame.data)
                if isinstance(msg, RouteAsk | Progress | Finish):
                    self._count(type(msg).__name__)
                    now = loop.time()
                    self._send(brain.on_message(worker, msg, now))
                    if isinstance(msg, Finish):
                        self._send(brain.recheck(now))
        except (ProtocolError, ConnectionError) as exc:  # a bad frame, or the worker went away
            log.warning("worker %s: %s", worker, exc)
        finally:
            if self.conns.get(worker) is conn:
                del self.conns[worker]
                brain.disconnect(worker, loop.time())
            await conn.out.close()

    def _send(self, out: list[Outgoing]) -> None:
        for worker, msg in out:
            self.stats.decisions += 1
            if worker is None:
                for each in self.conns.values():
                    each.out.put(msg)
            elif (conn := self.conns.get(worker)) is not None:
                conn.out.put(msg)

    def _count(self, kind: str) -> None:
        self.stats.messages[kind] = self.stats.messages.get(kind, 0) + 1

    # -- probes -------------------------------------------------------------------------

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "scheduler": self.name})

    async def _ready(self, _request: web.Request) -> web.Response:
        brain = self.brain
        if brain is None:
            return web.json_response({"leader": False, "scheduler": self.name}, status=503)
        return web.json_response(
            {
                "leader": True,
                "scheduler": self.name,
                "epoch": brain.epoch,
                "workers": sorted(self.conns),
                "requests": len(brain.mirrors),
                "held": len(brain.held),
            }
        )

    async def _dispatches(self, _request: web.Request) -> web.Response:
        """The most recent dispatches, oldest first (for operators and tests)."""
        brain = self.brain
        rows = [] if brain is None else list(brain.log)
        keys = ("worker", "request", "backend", "reason", "ttft_deadline", "started")
        return web.json_response([dict(zip(keys, r, strict=True)) for r in rows])

    async def _metrics(self, _request: web.Request) -> web.Response:
        brain = self.brain
        lines = [
            "# TYPE ascendra_scheduler_leader gauge",
            f"ascendra_scheduler_leader {int(brain is not None)}",
            "# TYPE ascendra_scheduler_epoch gauge",
            f"ascendra_scheduler_epoch {0 if brain is None else brain.epoch}",
            "# TYPE ascendra_scheduler_workers gauge",
            f"ascendra_scheduler_workers {len(self.conns)}",
            "# TYPE ascendra_scheduler_requests gauge",
            f"ascendra_scheduler_requests {0 if brain is None else len(brain.mirrors)}",
            "# TYPE ascendra_scheduler_held_requests gauge",
            f"ascendra_scheduler_held_requests {0 if brain is None else len(brain.held)}",
            "# TYPE ascendra_scheduler_elections_total counter",
            f"ascendra_scheduler_elections_total {self.stats.elections}",
            "# TYPE ascendra_scheduler_actions_total counter",
            f"ascendra_scheduler_actions_total {self.stats.decisions}",
            "# TYPE ascendra_scheduler_messages_total counter",
        ]
        for kind, n in sorted(self.stats.messages.items()):
            lines.append(f'ascendra_scheduler_messages_total{{type="{kind}"}} {n}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
