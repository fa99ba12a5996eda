"""Prometheus metrics of the slack predictor, registered on the caller's registry.

Theory of operation.  The proxy owns one ``CollectorRegistry`` (never the global one) and
passes it in; :class:`PredictorMetrics` registers:

* ``ascendra_predictor_source{source="learned"|"analytical"}``: 1 for the predictor in
  use, 0 for the other; read at scrape time from a callback (the predictor's ``source``),
  so a hot reload or a fallback shows up without anyone remembering to set it;
* ``ascendra_predictor_error_seconds{target}``: predicted minus actual time (``target``
  ``ttft``: time to the next token; ``next_k``: the next ``k`` tokens), so positive means
  conservative; this is also *actual minus predicted slack*, since slack is the deadline
  minus the predicted time;
* ``ascendra_predictor_abs_error_over_slo{target}``: the absolute error divided by the
  request's SLO for that target (TTFT SLO; ``k`` times the TBT SLO), the issue's goal
  metric, live.

The proxy calls :meth:`PredictorMetrics.observe` when an actual value becomes known for a
prediction it kept (for instance at a request's first token, with the TTFT prediction of
the last tick).  Observations are cheap (a prometheus-client histogram observe).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ERROR_BUCKETS", "RATIO_BUCKETS", "PredictorMetrics", "register_source_gauge"]

ERROR_BUCKETS = (
    -5.0, -2.0, -1.0, -0.5, -0.25, -0.1, -0.05, -0.02, -0.01,
    0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
RATIO_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
SOURCES = ("learned", "analytical")


class _SourceGauge(Collector):
    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source

    def collect(self) -> list[Metric]:
        fam = GaugeMetricFamily(
            "ascendra_predictor_source",
            "Slack predictor in use (1) by source",
            labels=["source"],
        )
        current = self._source()
        for s in SOURCES:
            fam.add_metric([s], 1.0 if s == current else 0.0)
        return [fam]


def register_source_gauge(registry: CollectorRegistry, source: Callable[[], str]) -> Collector:
    """Register ``ascendra_predictor_source`` on ``registry``; ``source()`` is read at
    scrape time (pass ``lambda: policy.predictor_source`` or ``lambda: predictor.source``)."""
    collector = _SourceGauge(source)
    registry.register(collector)
    return collector


class PredictorMetrics:
    """The source gauge and the error histograms on one registry."""

    def __init__(self, registry: CollectorRegistry, source: Callable[[], str]) -> None:
        self.source = register_source_gauge(registry, source)
        self.error = Histogram(
            "ascendra_predictor_error_seconds",
            "Predicted minus actual time (positive: conservative)",
            ["target"],
            buckets=ERROR_BUCKETS,
            registry=registry,
        )
        self.ratio = Histogram(
            "ascendra_predictor_abs_error_over_slo",
            "Absolute prediction error divided by the SLO for that target",
            ["target"],
            buckets=RATIO_BUCKETS,
            registry=registry,
        )

    def observe(self, target: str, predicted_s: float, actual_s: float, slo_s: float) -> None:
        """One prediction whose actual value is now known (``target``: ttft or next_k)."""
        err = predicted_s - actual_s
        self.error.labels(target).observe(err)
        if slo_s > 0:
            self.ratio.labels(target).observe(abs(err) / slo_s)
