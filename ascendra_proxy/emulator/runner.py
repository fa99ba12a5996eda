"""The real-time step loop: one asyncio task stepping the engine model.

Theory of operation: while the engine has work, the loop calls ``engine.step(now)``, sleeps
the step's modelled duration times ``time_scale`` and then hands the step's outputs to the
open :class:`RequestStream`\\ s (outputs of streams that went away meanwhile are dropped: their
requests were aborted).  Sleep targets are absolute, ``anchor + scale * sum(durations)`` on
the loop clock, so oversleeping one step shortens the next instead of accumulating drift; the
anchor is reset after idling, a stall, or when the loop falls more than ``MAX_LAG_S`` behind
(the process is CPU-bound and catching up would only burst).  Without work the task waits on
an event that :meth:`StepLoop.submit` sets.

The engine sees *model time*: wall seconds since start divided by ``time_scale`` (wall
seconds when ``time_scale`` is 0, which means "as fast as possible").  Request timestamps in
the streams (TTFT, inter-token gaps) are wall clock, as a real server measures them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from ascendra_proxy.emulator.stream import CONTINUE, STOPPED, RequestStream
from ascendra_proxy.engine.types import EngineRequest, EngineStats, StepResult

MAX_LAG_S = 0.25
log = logging.getLogger(__name__)


class Engine(Protocol):
    def add_request(self, request: EngineRequest) -> None: ...
    def abort(self, request_id: str) -> bool: ...
    def has_work(self) -> bool: ...
    def step(self, now: float) -> StepResult: ...
    def stats(self) -> EngineStats: ...


class StepObserver(Protocol):
    """Told about every finished stream and every step (metrics, fault counters)."""

    def on_finished(self, stream: RequestStream, now: float) -> None: ...
    def on_scheduled(self, stream: RequestStream, now: float) -> None:
        """The request left the waiting queue (the first time) in the step starting ``now``."""

    def on_step(self, result: StepResult, num_tokens: int) -> None:
        """After a step's outputs went out; ``num_tokens`` were delivered to open streams."""


class StepLoop:
    """Owns the engine's clock and the registry of open streams."""

    def __init__(
        self,
        engine: Engine,
        time_scale: float,
        observer: StepObserver,
        stall_remaining: Callable[[float], float] = lambda now: 0.0,
    ) -> None:
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.engine = engine
        self._scale = time_scale
        self._observer = observer
        self._stall_remaining = stall_remaining
        self._streams: dict[str, RequestStream] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0

    # ----- lifecycle -----
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._task = loop.create_task(self._run(), name="emulator-step-loop")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----- requests -----
    def model_now(self) -> float:
        elapsed = asyncio.get_running_loop().time() - self._t0
        return elapsed / self._scale if self._scale > 0 else elapsed

    def new_engine_id(self, public_id: str) -> str:
        """An engine-side id unique for the server's lifetime, derived from the public one."""
        return f"{public_id}#{next(self._ids)}"

    def submit(self, request: EngineRequest, stream: RequestStream) -> None:
        """Queue ``request`` in the engine (ValueError if the engine refuses it)."""
        self.engine.add_request(request)
        self._streams[request.request_id] = stream
        self._wake.set()

    def abort(self, stream: RequestStream) -> None:
        """Abort a request whose client went away (its stream just closes)."""
        if self._streams.pop(stream.engine_id, None) is not None:
            self.engine.abort(stream.engine_id)
            self._wake.set()

    def abort_with_reason(self, stream: RequestStream, now: float) -> None:
        """Abort and finish the stream with ``finish_reason="abort"`` (SGLang /abort_request)."""
        self.abort(stream)
        if not stream.done:
            stream.abort()
            self._observer.on_finished(stream, now)

    def crash(self) -> None:
        """Fault injection: every open stream crashes, every request leaves the engine."""
        streams, self._streams = self._streams, {}
        for engine_id, stream in streams.items():
            self.engine.abort(engine_id)
            stream.crash()
        self._wake.set()

    @property
    def num_open_streams(self) -> int:
        return len(self._streams)

    # ----- the loop -----
    async def _run(self) -> None:
        while True:
            try:
                await self._run_steps()
            except Exception:  # a bug must not leave every client hanging forever
                log.exception("emulator step loop failed; closing every open stream")
                self.crash()
                await asyncio.sleep(0.01)

    async def _run_steps(self) -> None:
        loop = asyncio.get_running_loop()
        anchor: float | None = None
        modelled = 0.0
        while True:
            if not self.engine.has_work():
                self._wake.clear()
                await self._wake.wait()
                anchor = None
                continue
            stall = self._stall_remaining(loop.time())
            if stall > 0.0:
                await asyncio.sleep(stall)
                anchor = None
                continue
            now = loop.time()
            if anchor is None or now - (anchor + modelled) > MAX_LAG_S:
                anchor, modelled = now, 0.0
            started = loop.time()
            result = self.engine.step(self.model_now())
            if result.newly_scheduled:
                self._scheduled(result.newly_scheduled, started)
            if not result.outputs and result.duration_s <= 0.0:
                # Nothing could be scheduled (e.g. no KV room): wait for an abort or a request.
                self._wake.clear()
                await self._wake.wait()
                anchor = None
                continue
            modelled += result.duration_s * self._scale
            await asyncio.sleep(max(0.0, anchor + modelled - loop.time()))
            self._deliver(result, loop.time())

    def _scheduled(self, request_ids: tuple[str, ...], started: float) -> None:
        for request_id in request_ids:
            stream = self._streams.get(request_id)
            if stream is not None and stream.scheduled_at is None:  # not when resumed
                stream.scheduled_at = started
                self._observer.on_scheduled(stream, started)

    def _deliver(self, result: StepResult, now: float) -> None:
        streams = self._streams
        observer = self._observer
        num_tokens = 0
        for out in result.outputs:
            stream = streams.get(out.request_id)
            if stream is None:
                continue
            num_tokens += len(out.new_token_ids)
            try:
                status = stream.deliver(out, now)
            except Exception:
                log.exception("delivering to stream %s failed; closing it", out.request_id)
                del streams[out.request_id]
                self.engine.abort(out.request_id)
                stream.crash()
                continue
            if status != CONTINUE:
                del streams[out.request_id]
                if status == STOPPED:
                    self.engine.abort(out.request_id)
                observer.on_finished(stream, now)
        observer.on_step(result, num_tokens)
