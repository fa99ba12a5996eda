"""Reading engine load from Prometheus text exposition.

Theory of operation: the proxy's own in-flight counts are exact and fresh; the engines'
``/metrics`` add what only the engine knows (its waiting queue, running batch, KV fill), one
scrape interval late.  ``parse_load`` reads just the three gauges the load book needs from a
metrics page, under the engine's names:

| signal  | vLLM                                           | SGLang                      |
|---------|------------------------------------------------|-----------------------------|
| running | ``vllm:num_requests_running``                  | ``sglang:num_running_reqs`` |
| waiting | ``vllm:num_requests_waiting``                  | ``sglang:num_queue_reqs``   |
| KV 0..1 | ``vllm:kv_cache_usage_perc`` (legacy           | ``sglang:token_usage``      |
|         | ``vllm:gpu_cache_usage_perc``)                 |                             |

Engines export one series per engine core / data-parallel rank: counts are summed, KV usage
takes the fullest series.  SGLang repeats every gauge per tensor-parallel rank; only
``tp_rank="0"`` (or unlabelled) series are read.  Only lines that start with a wanted name
are split, so a metrics page of a thousand histogram lines costs little.  The age of the
result is the scraper's business (``backends/health.py``), not this parser's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: int | None = None
    waiting: int | None = None
    kv_usage: float | None = None


@dataclass(frozen=True, slots=True)
class MetricNames:
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv_usage: tuple[str, ...]  # in order of preference (current name first)


VLLM_NAMES = MetricNames(
    running=("vllm:num_requests_running",),
    waiting=("vllm:num_requests_waiting",),
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
)
SGLANG_NAMES = MetricNames(
    running=("sglang:num_running_reqs",),
    waiting=("sglang:num_queue_reqs",),
    kv_usage=("sglang:token_usage",),
)


def parse_load(text: str, names: MetricNames) -> EngineLoad:
    wanted = (*names.running, *names.waiting, *names.kv_usage)
    samples: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        parsed = _sample(line)
        if parsed is None:
            continue
        name, labels, value = parsed
        if name not in wanted or not _primary_rank(labels):
            continue
        samples.setdefault(name, []).append(value)
    return EngineLoad(
        running=_count(samples, names.running),
        waiting=_count(samples, names.waiting),
        kv_usage=_fraction(samples, names.kv_usage),
    )


def _sample(line: str) -> tuple[str, str, float] | None:
    """``name{labels} value [timestamp]`` -> (name, labels, value); None if malformed."""
    brace = line.find("{")
    if brace >= 0:
        end = line.rfind("}")
        if end < brace:
            return None
        name, labels, rest = line[:brace], line[brace + 1 : end], line[end + 1 :]
    else:
        name, _, rest = line.partition(" ")
        labels = ""
    fields = rest.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    return name, labels, value


def _primary_rank(labels: str) -> bool:
    return "tp_rank=" not in labels or 'tp_rank="0"' in labels


def _count(samples: dict[str, list[float]], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in samples:
            return max(0, round(sum(samples[name])))
    return None


def _fraction(samples: dict[str, list[float]], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in samples:
            return min(1.0, max(0.0, max(samples[name])))
    return None
