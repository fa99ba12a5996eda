"""Prometheus metrics of the proxy (prefix ``ascendra_``), cheap enough for the token hot path.

Theory of operation: the stream pump observes an inter-token gap for every token arrival,
tens of thousands of times a second, so the hot path must not take a lock or walk bucket
lists.  ``Telemetry`` keeps plain Python numbers (the event loop is single-threaded) and
``FastHistogram.observe`` is one ``bisect`` and two additions.  At scrape time ``collect``
(a prometheus-client custom collector on the proxy's own ``CollectorRegistry``, never the
global one) turns them into metric families, and reads live gauges (in-flight per backend,
health, queue length, scrape age) through a callback, so gauges cost nothing per request.

Exported (all ``ascendra_``): ``requests_total{model,outcome}``,
``time_to_first_token_seconds{backend}``, ``inter_token_gap_seconds{backend}``,
``streamed_tokens_total{backend}``, ``upstream_errors_total{backend,kind}``,
``retries_total{backend}`` (backend that failed a request which was then tried elsewhere),
``decisions_total{reason}`` (policy decision reasons), and the gauges
``backend_inflight{backend}``, ``backend_queued_prompt_tokens{backend}``,
``backend_healthy{backend}``, ``backend_scrape_age_seconds{backend}``,
``proxy_queued_requests``, ``proxy_inflight_requests``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

PREFIX = "ascendra_"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 120)
GAP_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1,
    2.5,
)


class FastHistogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


@dataclass(frozen=True, slots=True)
class GaugeSample:
    name: str
    help: str
    labels: dict[str, str]
    value: float


class Telemetry(Collector):
    def __init__(
        self, backends: Iterable[str], gauges: Callable[[], Iterable[GaugeSample]] = tuple
    ) -> None:
        names = list(backends)
        self.ttft = {b: FastHistogram(TTFT_BUCKETS) for b in names}
        self.gaps = {b: FastHistogram(GAP_BUCKETS) for b in names}
        self.tokens = dict.fromkeys(names, 0)
        self.requests: dict[tuple[str, str], int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.retries = dict.fromkeys(names, 0)
        self.decisions: dict[str, int] = {}
        self.migrations: dict[str, int] = {}  # started streams continued elsewhere, by reason
        self.gauges = gauges  # live gauges, read at scrape time
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- recording (hot path: plain arithmetic) --------------------------------------------

    def request_done(self, model: str, outcome: str) -> None:
        key = (model, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    def upstream_error(self, backend: str, kind: str) -> None:
        key = (backend, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def retry(self, backend: str) -> None:
        self.retries[backend] = self.retries.get(backend, 0) + 1

    def decision(self, reason: str) -> None:
        self.decisions[reason] = self.decisions.get(reason, 0) + 1

    def migration(self, reason: str) -> None:
        self.migrations[reason] = self.migrations.get(reason, 0) + 1

    # -- exposition --------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        yield from self._live_gauges()

    def _counters(self) -> Iterator[CounterMetricFamily]:
        req = CounterMetricFamily(
            PREFIX + "requests", "Finished requests by outcome", labels=["model", "outcome"]
        )
        for (model, outcome), n in sorted(self.requests.items()):
            req.add_metric([model, outcome], n)
        yield req
        yield _counter_by(
            "streamed_tokens", "Tokens streamed from each backend", "backend", self.tokens
        )
        err = CounterMetricFamily(
            PREFIX + "upstream_errors", "Upstream failures by kind", labels=["backend", "kind"]
        )
        for (backend, kind), n in sorted(self.upstream_errors.items()):
            err.add_metric([backend, kind], n)
        yield err
        yield _counter_by(
            "retries",
            "Requests retried elsewhere after this backend failed",
            "backend",
            self.retries,
        )
        yield _counter_by("decisions", "Policy decisions by reason", "reason", self.decisions)
        yield _counter_by(
            "migrations",
            "Started streams continued token-exactly on another backend, by reason",
            "reason",
            self.migrations,
        )

    def _histograms(self) -> Iterator[HistogramMetricFamily]:
        for name, doc, table in (
            ("time_to_first_token_seconds", "Time to first token (streams)", self.ttft),
            ("inter_token_gap_seconds", "Gaps between token arrivals (streams)", self.gaps),
        ):
            fam = HistogramMetricFamily(PREFIX + name, doc, labels=["backend"])
            for backend, h in table.items():
                fam.add_metric([backend], h.cumulative(), sum_value=h.sum)
            yield fam

    def _live_gauges(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for s in self.gauges():
            fam = families.get(s.name)
            if fam is None:
                fam = families[s.name] = GaugeMetricFamily(
                    PREFIX + s.name, s.help, labels=list(s.labels)
                )
            fam.add_metric(list(s.labels.values()), s.value)
        yield from families.values()


def _counter_by(name: str, doc: str, label: str, table: dict[str, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for key, n in sorted(table.items()):
        fam.add_metric([key], n)
    return fam
