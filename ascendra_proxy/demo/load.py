"""One load run per policy, with the loadgen package in-process.

Theory of operation: :func:`prepare_workload` builds every prompt to its exact token count
once (the emulator's tokenizer, counted locally) and encodes the request bodies; each
policy's run then replays the *same* bodies at the *same* arrival offsets through its proxy
(:func:`loadgen.runner.execute`, open loop).  Around the run a :class:`CpuMeter` measures who
used the CPU.  Afterwards the proxy's ``/metrics`` is scraped for what the policy did
(offloads, migrations, retries, decisions by reason).  :func:`to_model_time` divides every
time of a record by the time scale, so summaries and plots are in the emulated A100's time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ascendra_proxy.demo.cpu import CpuMeter
from ascendra_proxy.demo.settings import DemoSettings
from ascendra_proxy.demo.stack import MODEL, Stack
from loadgen.client import Target, make_session
from loadgen.metrics import RequestRecord
from loadgen.prompts import emulator_counter
from loadgen.runner import Prepared, RunOptions, execute, prepare

__all__ = ["PolicyRun", "prepare_workload", "proxy_counters", "run_policy", "to_model_time"]

# The bodies only depend on the model name and the endpoint, not on the server's address.
PLACEHOLDER = Target("http://prepared.invalid", MODEL)
CPU_SAMPLE_S = 1.0  # wall-clock interval of the CPU meter's samples


@dataclass(slots=True)
class PolicyRun:
    policy: str
    records: list[RequestRecord]  # wall clock
    duration_s: float  # wall clock
    proxy: dict[str, Any]
    cpu: dict[str, Any]


async def prepare_workload(settings: DemoSettings) -> Prepared:
    items = settings.work_items()
    counter = emulator_counter()
    return await prepare(PLACEHOLDER, items, counter, seed=str(settings.seed), progress=False)


async def run_policy(stack: Stack, prepared: Prepared, progress: bool) -> PolicyRun:
    pids = {e.name.removeprefix(f"{stack.policy}-"): e.pid for e in stack.engines}
    meter = CpuMeter({**pids, "proxy": stack.proxy.pid})
    target = Target(stack.proxy.url, MODEL)
    async with make_session() as session:
        meter.start()
        t0 = time.monotonic()
        sampler = asyncio.create_task(_tick_every(meter, CPU_SAMPLE_S))
        try:
            result = await execute(session, target, prepared, RunOptions(progress=progress))
        finally:
            sampler.cancel()
        cpu = meter.stop(time.monotonic() - t0)
        counters = await proxy_counters(session, stack.proxy.url)
    return PolicyRun(stack.policy, result.records, result.duration_s, counters, cpu)


async def _tick_every(meter: CpuMeter, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        meter.tick()


async def proxy_counters(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """What the policy did, from the proxy's Prometheus counters."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with session.get(url + "/metrics", timeout=timeout) as resp:
        resp.raise_for_status()
        text = await resp.text()
    return counters_from_metrics(text)


def counters_from_metrics(text: str) -> dict[str, Any]:
    decisions: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    retries = 0
    upstream_errors: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ascendra_decisions_total":
                decisions[s.labels["reason"]] = int(s.value)
            elif s.name == "ascendra_requests_total":
                key = s.labels["outcome"]
                outcomes[key] = outcomes.get(key, 0) + int(s.value)
            elif s.name == "ascendra_retries_total":
                retries += int(s.value)
            elif s.name == "ascendra_upstream_errors_total":
                kind = s.labels["kind"]
                upstream_errors[kind] = upstream_errors.get(kind, 0) + int(s.value)
    return {
        "offloads": sum(n for r, n in decisions.items() if r.startswith("offload")),
        "migrations": sum(
            n for r, n in decisions.items() if r.startswith("migrate") and "unsupported" not in r
        ),
        "migrations_refused": sum(n for r, n in decisions.items() if "unsupported" in r),
        "retries": retries,
        "upstream_errors": sum(upstream_errors.values()),
        "upstream_errors_by_kind": upstream_errors,
        "outcomes": outcomes,
        "decisions": decisions,
    }


def to_model_time(r: RequestRecord, scale: float) -> RequestRecord:
    """A copy of ``r`` with every time (and SLO) divided by ``scale``."""

    def div(t: float | None) -> float | None:
        return None if t is None else t / scale

    return replace(
        r,
        arrival_s=r.arrival_s / scale,
        slo_ttft_s=r.slo_ttft_s / scale,
        slo_tbt_s=r.slo_tbt_s / scale,
        sent_s=div(r.sent_s),
        end_s=div(r.end_s),
        chunk_times=[t / scale for t in r.chunk_times],
        chunk_tokens=list(r.chunk_tokens),
        events=None if r.events is None else [_event(e, scale) for e in r.events],
    )


def _event(e: dict[str, Any], scale: float) -> dict[str, Any]:
    return {**e, "t": float(e["t"]) / scale} if "t" in e else dict(e)


def run_sync(stack: Stack, prepared: Prepared, progress: bool) -> PolicyRun:
    from loadgen.runner import run_async

    return run_async(run_policy(stack, prepared, progress))


def prepare_sync(settings: DemoSettings) -> Prepared:
    return asyncio.run(prepare_workload(settings))
