"""Rate sweeps and the capacity they imply.

Theory of operation: a sweep runs the same workload (same seed, hence the same lengths, SLO
classes and disconnects) at each rate in turn, re-timing only the arrivals, and builds fresh
prompt texts per point (the prompt seed includes the rate) so a server's prefix cache cannot
carry one point's prompts into the next.  Between points it waits ``cooldown_s`` so the
previous point's stragglers do not load the next one.  :func:`sweep_document` is the pure
part: per-point summaries plus ``capacity_rps_at_90`` by the paper's linear interpolation
(:func:`loadgen.metrics.capacity_at`).  The simulator can build the same document from its
own records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadgen.client import Target
from loadgen.metrics import RequestRecord, capacity_at, summarize
from loadgen.prompts import TokenCounter
from loadgen.results import record_to_dict
from loadgen.runner import RunOptions, measure
from loadgen.workloads import WorkloadSpec, build_workload

__all__ = ["SweepPoint", "parse_rates", "run_sweep", "sweep_document"]

CAPACITY_TARGET = 0.9


@dataclass(slots=True)
class SweepPoint:
    rate: float
    records: list[RequestRecord]
    duration_s: float
    interrupted: bool = False


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--rates: expected comma-separated numbers, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"--rates: expected positive rates, got {text!r}")
    return sorted(rates)


def point_document(point: SweepPoint, keep_requests: bool = True) -> dict[str, Any]:
    summary = summarize(point.records, point.duration_s)
    summary["interrupted"] = point.interrupted
    doc: dict[str, Any] = {"rate": point.rate, "summary": summary}
    if keep_requests:
        doc["requests"] = [record_to_dict(r) for r in point.records]
    return doc


def sweep_document(
    config: dict[str, Any], points: Sequence[dict[str, Any]], target: float = CAPACITY_TARGET
) -> dict[str, Any]:
    """The sweep results file: points plus the capacity they imply."""
    complete = [p for p in points if not p["summary"].get("interrupted")]
    cap = capacity_at(
        [(p["rate"], p["summary"]["slo_attainment"] or 0.0) for p in complete], target
    )
    return {
        "kind": "sweep",
        "config": config,
        "capacity_rps_at_90": cap.rps,
        "capacity_status": cap.status,
        "capacity_bound": cap.bound,
        "points": list(points),
    }


async def run_sweep(
    session: aiohttp.ClientSession,
    target: Target,
    spec: WorkloadSpec,
    rates: Sequence[float],
    counter: TokenCounter,
    options: RunOptions,
    *,
    stop: asyncio.Event,
    cooldown_s: float = 2.0,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run each rate; returns point documents (the last may be interrupted)."""
    points: list[dict[str, Any]] = []
    for i, rate in enumerate(rates):
        if stop.is_set():
            break
        if i and cooldown_s > 0:
            await asyncio.sleep(cooldown_s)
        items = build_workload(spec.with_rate(rate))
        result = await measure(
            session, target, items, counter, options, prompt_seed=f"{spec.seed}@{rate:g}", stop=stop
        )
        doc = point_document(
            SweepPoint(rate, result.records, result.duration_s, result.interrupted)
        )
        points.append(doc)
        if on_point is not None:
            on_point(doc)
    return points
