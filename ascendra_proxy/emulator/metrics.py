"""Prometheus metrics of an emulated server, with vLLM's or SGLang's names and labels.

Theory of operation: every server owns a private ``CollectorRegistry`` (never the global one,
so several emulators live in one process).  Gauges and counters that the engine model already
keeps (running, waiting, KV usage, prefix-cache queries/hits, preemptions, token totals) are
read from ``engine.stats()`` at scrape time by a custom collector; per-request latencies are
observed as they happen: TTFT and inter-token gaps from the stream callback
(:meth:`ServerMetrics.on_tokens`), the queue time when a step first schedules a request (vLLM),
end-to-end latency and the finish reason when a stream ends.

Bucket boundaries are the engines' own.  Client disconnects are not counted in
``vllm:request_success_total`` (vLLM does not either); SGLang counts aborts in
``sglang:num_aborted_requests_total``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ascendra_proxy.emulator.stream import RequestStream
from ascendra_proxy.engine.types import EngineStats, StepResult

# fmt: off
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                     5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0, 20.0, 40.0, 80.0)
VLLM_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
VLLM_ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SGLANG_TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0,
                       80.0, 100.0, 200.0, 400.0)
SGLANG_ITL_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04,
                      0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0)
SGLANG_E2E_BUCKETS = (*SGLANG_TTFT_BUCKETS, 800.0)
# fmt: on

StatsSource = Callable[[], EngineStats]


def one_two_five_buckets(limit: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit`` (vLLM's token-count histogram buckets)."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > limit:
                return tuple(out)
            out.append(float(value))
        exponent += 1


class LatencyHistogram:
    """A lock-free histogram for the per-token hot path (one bisect and two adds)."""

    __slots__ = ("bounds", "counts", "created", "doc", "name", "total")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, labels: dict[str, str]) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=list(labels))
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), float(cumulative)))
        family.add_metric(list(labels.values()), buckets, self.total)
        family.samples.append(Sample(self.name + "_created", dict(labels), self.created))
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _HistogramCollector(Collector):
    def __init__(self, histograms: list[LatencyHistogram], labels: dict[str, str]) -> None:
        self._histograms = histograms
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        for histogram in self._histograms:
            yield histogram.family(self._labels)


class ServerMetrics:
    """Latency histograms and counters shared by the flavours (names differ per flavour)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        labels: dict[str, str],
        buckets: tuple[tuple[float, ...], ...],
    ) -> None:
        self.registry = registry
        self.labels = labels
        ttft, itl, e2e = buckets
        self._ttft = LatencyHistogram(
            f"{prefix}:time_to_first_token_seconds", "Time to first token.", ttft
        )
        self._itl = LatencyHistogram(
            f"{prefix}:inter_token_latency_seconds", "Time between output tokens.", itl
        )
        self._e2e = LatencyHistogram(
            f"{prefix}:e2e_request_latency_seconds", "End-to-end request latency.", e2e
        )
        registry.register(_HistogramCollector([self._ttft, self._itl, self._e2e], labels))

    def on_tokens(self, stream: RequestStream, now: float, num_tokens: int) -> None:
        if stream.first_token_at is None:
            self._ttft.observe(now - stream.arrival)
        elif stream.last_token_at is not None:
            self._itl.observe(now - stream.last_token_at)

    def on_finished(self, stream: RequestStream, now: float) -> None:
        self._e2e.observe(now - stream.arrival)

    def on_scheduled(self, stream: RequestStream, now: float) -> None:
        return None

    def on_step(self, result: StepResult, num_tokens: int) -> None:
        return None

    def on_aborted(self, stream: RequestStream) -> None:
        return None

    def render(self) -> bytes:
        return generate_latest(self.registry)


class VllmMetrics(ServerMetrics):
    def __init__(
        self, model: str, stats: StatsSource, cache_info: dict[str, str], max_model_len: int
    ) -> None:
        registry = CollectorRegistry(auto_describe=True)
        labels = {"model_name": model, "engine": "0"}
        buckets = (VLLM_TTFT_BUCKETS, VLLM_ITL_BUCKETS, VLLM_E2E_BUCKETS)
        super().__init__(registry, "vllm", labels, buckets)
        names = list(labels)
        self._success = Counter(
            "vllm:request_success",
            "Successfully finished requests.",
            [*names, "finished_reason"],
            registry=registry,
        )
        self._success_by_reason = {
            reason: self._success.labels(**labels, finished_reason=reason)
            # vLLM 0.32 exports every reason from the start (0 until one happens)
            for reason in ("stop", "length", "abort", "error", "repetition")
        }
        token_buckets = one_two_five_buckets(max_model_len)
        self._prompt_hist = Histogram(
            "vllm:request_prompt_tokens",
            "Prompt tokens per request.",
            names,
            buckets=token_buckets,
            registry=registry,
        ).labels(**labels)
        self._gen_hist = Histogram(
            "vllm:request_generation_tokens",
            "Generated tokens per request.",
            names,
            buckets=token_buckets,
            registry=registry,
        ).labels(**labels)
        self._iteration = Histogram(
            "vllm:iteration_tokens_total",
            "Tokens per engine step.",
            names,
            buckets=VLLM_ITERATION_BUCKETS,
            registry=registry,
        ).labels(**labels)
        self._queue = LatencyHistogram(
            "vllm:request_queue_time_seconds",
            "Time a request spent in the waiting queue.",
            VLLM_E2E_BUCKETS,
        )
        registry.register(_HistogramCollector([self._queue], labels))
        registry.register(_VllmEngineCollector(stats, labels, cache_info))

    def on_scheduled(self, stream: RequestStream, now: float) -> None:
        self._queue.observe(max(0.0, now - stream.arrival))

    def on_finished(self, stream: RequestStream, now: float) -> None:
        super().on_finished(stream, now)
        reason = stream.finish_reason
        if reason in self._success_by_reason:
            self._success_by_reason[reason].inc()
        self._prompt_hist.observe(stream.prompt_len)
        self._gen_hist.observe(stream.num_generated)

    def on_step(self, result: StepResult, num_tokens: int) -> None:
        self._iteration.observe(result.num_prefill_tokens + result.num_decode_seqs)


class _VllmEngineCollector(Collector):
    def __init__(self, stats: StatsSource, labels: dict[str, str], cache_info: dict[str, str]):
        self._stats = stats
        self._labels = labels
        self._cache_info = cache_info

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        names = list(self._labels)
        values = list(self._labels.values())

        def gauge(name: str, doc: str, value: float) -> Metric:
            family = GaugeMetricFamily(f"vllm:{name}", doc, labels=names)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> Metric:
            family = CounterMetricFamily(f"vllm:{name}", doc, labels=names)
            family.add_metric(values, value)
            return family

        yield gauge("num_requests_running", "Requests in model execution batches.", s.num_running)
        yield gauge("num_requests_waiting", "Requests waiting to be processed.", s.num_waiting)
        yield gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_usage)
        yield counter(
            "prefix_cache_queries", "Prefix cache queries, in tokens.", s.prefix_cache_queries
        )
        yield counter("prefix_cache_hits", "Prefix cache hits, in tokens.", s.prefix_cache_hits)
        yield counter("num_preemptions", "Cumulative number of preemptions.", s.num_preemptions)
        yield counter("prompt_tokens", "Prefill tokens processed.", s.prompt_tokens_total)
        yield counter(
            "generation_tokens", "Generation tokens processed.", s.generation_tokens_total
        )
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the cache config.",
            labels=[*self._cache_info, "engine"],
        )
        info.add_metric([*self._cache_info.values(), self._labels["engine"]], 1.0)
        yield info


class SglangMetrics(ServerMetrics):
    def __init__(self, model: str, stats: StatsSource) -> None:
        registry = CollectorRegistry(auto_describe=True)
        labels = {"model_name": model, "engine_type": "unified", "tp_rank": "0", "pp_rank": "0"}
        buckets = (SGLANG_TTFT_BUCKETS, SGLANG_ITL_BUCKETS, SGLANG_E2E_BUCKETS)
        super().__init__(registry, "sglang", labels, buckets)
        names = list(labels)

        def counter(name: str, doc: str) -> Any:
            return Counter(f"sglang:{name}", doc, names, registry=registry).labels(**labels)

        self._prompt = counter("prompt_tokens", "Number of prefill tokens processed.")
        self._generation = counter("generation_tokens", "Number of generation tokens processed.")
        self._cached = counter("cached_tokens", "Number of cached prompt tokens.")
        self._requests = counter("num_requests", "Number of requests processed.")
        self._aborted = counter("num_aborted_requests", "Number of requests aborted.")
        registry.register(_SglangEngineCollector(stats, labels))

    def on_tokens(self, stream: RequestStream, now: float, num_tokens: int) -> None:
        super().on_tokens(stream, now, num_tokens)
        self._generation.inc(num_tokens)

    def on_finished(self, stream: RequestStream, now: float) -> None:
        super().on_finished(stream, now)
        self._requests.inc()
        self._prompt.inc(stream.prompt_len)
        self._cached.inc(stream.num_cached_tokens)
        if stream.finish_reason == "abort":
            self._aborted.inc()

    def on_aborted(self, stream: RequestStream) -> None:
        self._requests.inc()
        self._aborted.inc()


class _SglangEngineCollector(Collector):
    def __init__(self, stats: StatsSource, labels: dict[str, str]) -> None:
        self._stats = stats
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        names = list(self._labels)
        values = list(self._labels.values())
        capacity = s.num_total_blocks * s.block_size
        hit_rate = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0
        gauges = (
            ("num_running_reqs", "The number of running requests.", s.num_running),
            ("num_queue_reqs", "The number of requests in the waiting queue.", s.num_waiting),
            ("num_used_tokens", "The number of used tokens.", round(s.kv_usage * capacity)),
            ("token_usage", "The token usage.", s.kv_usage),
            ("max_total_num_tokens", "Maximum total number of tokens in the KV pool.", capacity),
            ("cache_hit_rate", "The prefix cache hit rate.", hit_rate),
        )
        for name, doc, value in gauges:
            family = GaugeMetricFamily(f"sglang:{name}", doc, labels=names)
            family.add_metric(values, float(value))
            yield family
