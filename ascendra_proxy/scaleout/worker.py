"""A stream worker's side of the split: the policy stand-in and the link to the scheduler.

Theory of operation.  A worker runs the ordinary gateway and stream pump; only its policy
differs.  ``RemotePolicy`` answers the gateway's ``route`` with a ``Hold`` after sending the
request's metadata to the scheduler (once per attempt), and the scheduler's decisions come
back as the same actions a local policy tick produces (``Assign``, ``Move``, ``Drop``,
``Warm``, ``SetRole``), carried out by the proxy's one action interpreter
(``proxy/ticker.apply_action``): the held request wakes and takes its dispatch.

``SchedulerLink`` owns the WebSocket.  It tries the configured scheduler addresses in turn
(a standby answers ``not_leader``), sends ``hello`` with every live request (waiting ones to
be decided, running ones to be mirrored: a new leader rebuilds its state from this), then
``progress`` every ``progress_s`` and ``finish`` as requests end.  A message from an older
epoch than the newest seen is dropped (fencing).

Fail-open: while no scheduler has answered for ``fail_open_s``, ``route`` asks the local
fallback policy instead: the configured policy, with ``engine_priority`` LP ordering for
Ascendra (bind at once, deadline priority to the engine).  Requests already waiting in the
worker are re-asked within the gateway's recheck period, so they bind too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.contracts import Policy
from ascendra_proxy.core.decisions import Action, Assign, Decision, Hold, Move
from ascendra_proxy.core.policies.ascendra.params import AscendraParams
from ascendra_proxy.core.request import Phase, RequestState
from ascendra_proxy.scaleout.messages import (
    ActionMessage,
    Finish,
    Hello,
    NotLeader,
    Progress,
    ProtocolError,
    RouteAsk,
    Welcome,
    decode,
    encode,
    progress_row,
    request_to_wire,
)
from ascendra_proxy.scaleout.transport import Outbox, connect

if TYPE_CHECKING:
    from ascendra_proxy.proxy.gateway import Gateway

__all__ = [
    "WORKER",
    "RemotePolicy",
    "SchedulerLink",
    "WorkerOptions",
    "attach_worker",
    "fail_open_policy",
    "worker_name",
]

log = logging.getLogger(__name__)

FAIL_OPEN_S = 0.2
RETRY_S = 0.1
HANDSHAKE_S = 2.0
SCHEDULER_WAIT = "scheduler_wait"


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a proxy process runs as a stream worker."""

    schedulers: tuple[str, ...]  # addresses, tried in turn (a standby answers not_leader)
    name: str | None = None
    reuse_port: bool = False
    fail_open_s: float = FAIL_OPEN_S
    private_port: int | None = None  # also listen here, alone (this process's /metrics)

    def policy(self, cfg: ProxyConfig, configured: Policy) -> RemotePolicy | None:
        """The worker's policy stand-in (None when no scheduler is configured)."""
        if not self.schedulers:
            return None
        return RemotePolicy(configured.name, fail_open_policy(cfg))


WORKER = web.AppKey("ascendra_worker", WorkerOptions)


def attach_worker(gw: Gateway, policy: RemotePolicy, opts: WorkerOptions) -> SchedulerLink:
    """Connect the gateway to the scheduler (started; the caller closes it)."""
    link = SchedulerLink(gw, policy, opts.schedulers, opts.name, opts.fail_open_s)
    link.start()
    return link


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def worker_config(cfg: ProxyConfig, name: str) -> ProxyConfig:
    """A worker's own view of the config: training rows go to a file of its own (several
    workers appending to one rolling file would interleave and race on rotation), and it
    does not retrain (N workers would each rewrite the model file; the watched model is
    still loaded and reloaded)."""
    pc = cfg.predictor
    td = pc.training_data
    if td is None and pc.retrain is None:
        return cfg
    if pc.retrain is not None:
        log.warning("stream worker %s: predictor.retrain is off in split mode", name)
    if td is not None:
        path = Path(td.path)
        td = dataclasses.replace(td, path=str(path.with_name(f"{path.stem}.{name}{path.suffix}")))
    return dataclasses.replace(
        cfg, predictor=dataclasses.replace(pc, training_data=td, retrain=None)
    )


def fail_open_policy(cfg: ProxyConfig) -> Policy:
    """The policy a worker routes with while no scheduler answers."""
    params = cfg.policy.params
    if isinstance(params, AscendraParams):
        params = dataclasses.replace(params, lp_ordering="engine_priority")
    return dataclasses.replace(
        cfg, policy=dataclasses.replace(cfg.policy, params=params)
    ).make_policy()


class RemotePolicy:
    """The worker's policy: the scheduler decides; the local fallback while it is away."""

    tick_interval_s: float | None = None

    def __init__(self, name: str, fallback: Policy) -> None:
        self.name = name
        self.fallback = fallback
        self.link: SchedulerLink | None = None
        self._asked: dict[str, int] = {}  # request -> attempts when last sent to the scheduler
        self._local: set[str] = set()  # requests the fallback routed

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        link = self.link
        if link is None or link.failing_open(now):
            self._local.add(req.id)
            return self.fallback.route(req, backends, now, exclude)
        if self._asked.get(req.id) != req.attempts:
            self._asked[req.id] = req.attempts
            link.send(RouteAsk(request_to_wire(req), sorted(exclude)))
        return Hold(SCHEDULER_WAIT, "waiting for the scheduler")

    def asked(self, req: RequestState) -> None:
        """The request was sent in a ``hello``: do not send it again for this attempt."""
        self._asked[req.id] = req.attempts

    def on_finish(self, req: RequestState, now: float) -> None:
        self._asked.pop(req.id, None)
        if self.link is not None:
            self.link.send(Finish(req.id, req.outcome.value if req.outcome else "completed", now))
        if req.id in self._local:
            self._local.discard(req.id)
            self.fallback.on_finish(req, now)

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        return ()


class SchedulerLink:
    """The worker's connection to the active scheduler (reconnecting, fenced by epoch)."""

    def __init__(
        self,
        gw: Gateway,
        policy: RemotePolicy,
        addresses: Sequence[str],
        name: str | None = None,
        fail_open_s: float = FAIL_OPEN_S,
    ) -> None:
        self.gw = gw
        self.policy = policy
        self.addresses = list(addresses)
        self.name = name or worker_name()
        self.fail_open_s = fail_open_s
        self.epoch = 0  # newest epoch seen
        self.scheduler: str | None = None  # id of the scheduler we are connected to
        self.connects = 0
        self.dropped_stale = 0
        self._out: Outbox | None = None
        self._down_since = gw.clock()
        self._ack = 0
        self._rows = True  # the scheduler wants progress rows (its policy ticks)
        self._last: tuple[int, dict[str, list[int]], list[str]] | None = None
        self._sent: dict[str, tuple[int, int, str]] = {}
        self._task: asyncio.Task[None] | None = None
        policy.link = self

    # -- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._out is not None

    def failing_open(self, now: float) -> bool:
        return self._out is None and now - self._down_since >= self.fail_open_s

    def send(self, msg: RouteAsk | Finish | Progress) -> None:
        if self._out is not None:
            self._out.put(msg)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler-link")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            for address in self.addresses:
                try:
                    await self._session(address)
                except (TimeoutError, OSError, aiohttp.ClientError, ProtocolError) as exc:
                    log.debug("scheduler %s: %s: %s", address, type(exc).__name__, exc)
                await asyncio.sleep(RETRY_S)

    async def _session(self, address: str) -> None:
        session, ws = await connect(address, HANDSHAKE_S)
        try:
            await ws.send_bytes(encode(self._hello()))
            reply = decode(await ws.receive_bytes(timeout=HANDSHAKE_S))
            if isinstance(reply, NotLeader) or not isinstance(reply, Welcome):
                return
            if reply.epoch < self.epoch:
                log.warning(
                    "scheduler %s has stale epoch %d < %d", address, reply.epoch, self.epoch
                )
                return
            self.epoch, self.scheduler = reply.epoch, reply.scheduler
            self._out = Outbox(ws)
            self.connects += 1
            log.info(
                "worker %s: scheduler %s leads (epoch %d)", self.name, reply.scheduler, reply.epoch
            )
            self._rows = reply.rows
            progress = asyncio.get_running_loop().create_task(self._progress(reply.progress_s))
            try:
                await self._read(ws)
            finally:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
        finally:
            if self._out is not None:
                await self._out.close()
                self._out = None
                self._down_since = self.gw.clock()
                self.scheduler = None
                self.gw.capacity.notify()
            await ws.close()
            await session.close()

    def _hello(self) -> Hello:
        waiting, running = [], []
        self._sent.clear()
        self._ack = 0
        self._last = None
        for f in self.gw.flights.values():
            s = f.state
            if s.finished:
                continue
            if s.phase is Phase.QUEUED and f.attempt is None and f.pending is None:
                waiting.append([request_to_wire(s), sorted(f.exclude)])
                self.policy.asked(s)
            else:
                running.append(request_to_wire(s))
        return Hello(self.name, self.gw.clock(), waiting, running)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        from ascendra_proxy.proxy.ticker import apply_action

        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.BINARY:
                break
            msg = decode(frame.data)
            if not isinstance(msg, ActionMessage):
                continue
            if isinstance(msg.action, Assign | Move):
                self._ack += 1
            if msg.epoch < self.epoch:
                self.dropped_stale += 1
                continue
            apply_action(self.gw, msg.action)

    async def _progress(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.send_progress()

    def send_progress(self) -> None:
        """Counts, breakers and (when the scheduler's policy ticks) the progress rows that
        changed; nothing at all when nothing changed."""
        gw, now = self.gw, self.gw.clock()
        rows = self._changed_rows() if self._rows else []
        counts = {r.name: [r.inflight, r.queued_prompt_tokens] for r in gw.backends}
        down = [r.name for r in gw.backends if not r.breaker.available(now)]
        state = (self._ack, counts, down)
        if not rows and state == self._last:
            return
        self._last = state
        self.send(Progress(self._ack, counts, down, rows))

    def _changed_rows(self) -> list[list[object]]:
        rows = []
        live = set()
        for rid, f in self.gw.flights.items():
            s = f.state
            live.add(rid)
            key = (s.tokens, s.attempts, s.phase.value)
            if self._sent.get(rid) != key:
                self._sent[rid] = key
                rows.append(progress_row(s))
        for rid in [r for r in self._sent if r not in live]:
            del self._sent[rid]
        return rows
