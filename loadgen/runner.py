"""Running a workload against a server: prepare prompts, send on schedule, collect records.

Theory of operation: a run has two phases.  :func:`prepare` builds every prompt to its exact
token count and encodes every request body *before* the clock starts, so tokenizer round
trips and JSON encoding never compete with the measured traffic.  :func:`execute` then
starts the clock (``t0 = time.perf_counter()``) and a scheduler task that sleeps until each
item's arrival offset and spawns one task per request (open loop: a slow server does not
slow the arrivals; an optional ``max_concurrency`` semaphore turns it into a bounded client,
and the wait for a slot then counts in TTFT).  The run ends when every request has ended, or
when ``stop`` is set (Ctrl-C): the scheduler and in-flight requests are cancelled, their
records keep what was measured and say ``unfinished``, and requests never sent are left out.
A tqdm bar counts finished requests and shows in-flight streams and token rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from tqdm import tqdm

from loadgen.client import ClientStats, Target, encode_body, slo_headers, stream_request
from loadgen.metrics import RequestRecord
from loadgen.prompts import (
    ApproxCounter,
    PromptBuilder,
    RemoteCounter,
    TokenCounter,
    TokenizeUnavailable,
    emulator_counter,
    hf_counter,
)
from loadgen.workloads import WorkItem

__all__ = [
    "Prepared",
    "RunOptions",
    "RunResult",
    "execute",
    "make_counter",
    "measure",
    "prepare",
    "run_async",
]

BUILD_CONCURRENCY = 32
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (about a third less CPU per token)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


@dataclass(frozen=True, slots=True)
class RunOptions:
    max_concurrency: int | None = None
    request_timeout_s: float = 600.0
    progress: bool = True
    slo_headers: str = "numbers"  # or "class" (see loadgen.client.slo_headers)


@dataclass(slots=True)
class Prepared:
    items: list[WorkItem]
    bodies: list[bytes]
    prompt_tokens: list[int]  # measured lengths (equal to the targets, or within one token)
    chat_template_counted: bool = True


@dataclass(slots=True)
class RunResult:
    records: list[RequestRecord]
    duration_s: float
    interrupted: bool
    not_sent: int
    stats: ClientStats = field(default_factory=ClientStats)


async def make_counter(
    session: aiohttp.ClientSession,
    target: Target,
    tokenizer: str | None,
    tokenize_url: str | None,
) -> TokenCounter:
    """``--tokenizer`` (``emulator``, ``approx`` or a tokenizer.json path) or the target's."""
    if tokenizer == "emulator":
        return emulator_counter()
    if tokenizer == "approx":
        return ApproxCounter()
    if tokenizer:
        return hf_counter(tokenizer)
    urls = (
        [tokenize_url]
        if tokenize_url
        else [target.root + "/tokenize", target.root + "/v1/tokenize"]
    )
    counter = RemoteCounter(session, urls, target.model)
    try:
        await counter.probe()
    except TokenizeUnavailable as exc:
        raise SystemExit(
            f"cannot build exact-length prompts: no usable /tokenize ({exc}). Point "
            "--tokenize-url at a backend's /tokenize, or pass --tokenizer PATH/TO/tokenizer.json, "
            "--tokenizer emulator, or --tokenizer approx (lengths then only approximate)"
        ) from None
    return counter


async def measure(
    session: aiohttp.ClientSession,
    target: Target,
    items: Sequence[WorkItem],
    counter: TokenCounter,
    options: RunOptions,
    *,
    prompt_seed: str,
    stop: asyncio.Event | None = None,
) -> RunResult:
    """Prepare the prompts, then run: the whole of one load point (``stop`` ends either)."""
    stop = stop or asyncio.Event()
    building = asyncio.create_task(
        prepare(target, items, counter, seed=prompt_seed, progress=options.progress)
    )
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({building, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await _cancel(stopper)
    if not building.done():  # stopped while building prompts: nothing was sent
        await _cancel(building)
        return RunResult([], 0.0, True, len(items))
    return await execute(session, target, building.result(), options, stop)


async def prepare(
    target: Target, items: Sequence[WorkItem], counter: TokenCounter, *, seed: str, progress: bool
) -> Prepared:
    builder = PromptBuilder(counter, chat=target.endpoint == "chat", seed=seed)
    await builder.calibrate()
    if any(item.blocks for item in items):
        await builder.learn_token_ids()  # block prompts: token ids of this target's words
    gate = asyncio.Semaphore(BUILD_CONCURRENCY)
    bar = tqdm(total=len(items), desc="prompts", unit="req", disable=not progress, leave=False)

    async def one(item: WorkItem) -> tuple[bytes, int]:
        async with gate:
            prompt = await builder.build(item)
        bar.update(1)
        return encode_body(target, prompt, item), prompt.tokens

    try:
        built = await asyncio.gather(*(one(item) for item in items))
    finally:
        bar.close()
    return Prepared(
        list(items), [b for b, _ in built], [n for _, n in built], builder.chat_template_counted
    )


def _record(item: WorkItem, prompt_tokens: int) -> RequestRecord:
    return RequestRecord(
        index=item.index,
        arrival_s=item.arrival_s,
        prompt_tokens=prompt_tokens,
        output_tokens=item.output_tokens,
        slo_ttft_s=item.slo_ttft_s,
        slo_tbt_s=item.slo_tbt_s,
        prefix_group=item.prefix_group,
        slo_class=item.slo_class,
    )


async def execute(
    session: aiohttp.ClientSession,
    target: Target,
    prepared: Prepared,
    options: RunOptions,
    stop: asyncio.Event | None = None,
) -> RunResult:
    """Send every prepared request at its arrival offset; see the module docstring."""
    return await _Run(session, target, prepared, options).run(stop or asyncio.Event())


class _Run:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        prepared: Prepared,
        options: RunOptions,
    ) -> None:
        self.session, self.target, self.prepared, self.options = session, target, prepared, options
        self.stats = ClientStats()
        self.records = [
            _record(i, n) for i, n in zip(prepared.items, prepared.prompt_tokens, strict=True)
        ]
        self.sent = [False] * len(self.records)
        self.inflight: set[asyncio.Task[None]] = set()
        self.gate = asyncio.Semaphore(options.max_concurrency) if options.max_concurrency else None
        self.base_headers = target.headers()
        self.bar = tqdm(
            total=len(self.records), unit="req", disable=not options.progress, mininterval=0.5
        )
        self.t0 = 0.0

    async def run(self, stop: asyncio.Event) -> RunResult:
        gc.collect()
        gc.freeze()  # long-lived objects (modules, prompts) out of the collector's way
        try:
            return await self._run(stop)
        finally:
            gc.unfreeze()

    async def _run(self, stop: asyncio.Event) -> RunResult:
        self.t0 = time.perf_counter()
        ticker = asyncio.create_task(self._tick()) if self.options.progress else None
        scheduler = asyncio.create_task(self._schedule())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({scheduler, stopper}, return_when=asyncio.FIRST_COMPLETED)
        interrupted = not scheduler.done()
        if interrupted:
            scheduler.cancel()
            for task in list(self.inflight):
                task.cancel()
            await asyncio.gather(scheduler, *self.inflight, return_exceptions=True)
        duration = time.perf_counter() - self.t0
        await _cancel(stopper)
        if ticker is not None:
            await _cancel(ticker)
        self.bar.close()
        kept = [r for r, s in zip(self.records, self.sent, strict=True) if s]
        return RunResult(kept, duration, interrupted, len(self.records) - len(kept), self.stats)

    async def _schedule(self) -> None:
        for k, item in enumerate(self.prepared.items):
            delay = item.arrival_s - (time.perf_counter() - self.t0)
            while delay > 0:  # timers may fire a little early; never send before the arrival
                await asyncio.sleep(delay)
                delay = item.arrival_s - (time.perf_counter() - self.t0)
            task = asyncio.create_task(self._one(k))
            self.sent[k] = True
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        while self.inflight:
            await asyncio.wait(set(self.inflight))

    async def _one(self, k: int) -> None:
        item = self.prepared.items[k]
        headers = {**self.base_headers, **slo_headers(item, self.options.slo_headers)}
        async with self.gate or contextlib.nullcontext():
            await stream_request(
                self.session,
                self.target,
                self.prepared.bodies[k],
                headers,
                self.records[k],
                self.t0,
                disconnect_after_s=item.disconnect_after_s,
                timeout_s=self.options.request_timeout_s,
                stats=self.stats,
            )
        self.bar.update(1)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            tokens = sum(r.tokens for r in self.records)
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix(streams=len(self.inflight), tok_s=f"{tokens / elapsed:.0f}")


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
