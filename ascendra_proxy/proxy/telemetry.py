"""Prometheus metrics of the proxy (prefix ``ascendra_``), cheap enough for the token hot path.

Theory of operation: the stream pump observes an inter-token gap for every token arrival,
tens of thousands of times a second, so the hot path must not take a lock or walk bucket
lists.  ``Telemetry`` keeps plain Python numbers (the event loop is single-threaded) and
``FastHistogram.observe`` is one ``bisect`` and two additions.  At scrape time ``collect``
(a prometheus-client custom collector on the proxy's own ``CollectorRegistry``, never the
global one) turns them into metric families, and reads live gauges (in-flight per backend,
health, queue length, scrape age) through a callback, so gauges cost nothing per request.

Exported (all ``ascendra_``): ``requests_total{model,outcome}``,
``refused_requests_total{reason}`` (refused before admission, by a fixed set of reasons),
``request_duration_seconds{model,outcome}`` (admission to end, every admitted request),
``time_to_first_token_seconds{backend,model,stream}`` (``stream="false"``: a non-streaming
answer, whose first token is its whole latency), ``inter_token_gap_seconds{backend,model}``
(per token: tokens that arrive together count one gap and zero gaps for the others, so a
stream of ``k`` tokens adds ``k - 1`` observations; see ``core/request.py``),
``build_info{version}`` (always 1), the process collector's ``process_*`` families,
``relayed_requests_total{endpoint,outcome}`` (``proxy/passthrough.py``),
``streamed_tokens_total{backend}``, ``upstream_errors_total{backend,kind}``,
``retries_total{backend}`` (backend that failed a request which was then tried elsewhere),
``decisions_total{reason}`` (policy decision reasons), and the gauges
``backend_inflight{backend}``, ``backend_queued_prompt_tokens{backend}``,
``backend_healthy{backend}``, ``backend_scrape_age_seconds{backend}``,
``proxy_queued_requests``, ``proxy_inflight_requests``.

SLO attainment, ``slo_requests_total{model,slo_class,ttft,tbt}`` (``met``/``missed``): every
admitted request once, at its single ending (``Gateway.finish``), judged by
:func:`slo_verdict` against its own resolved SLO (headers included) from what its
``RequestState`` already holds, so the token path does no extra work.  The rule is the load
generator's (``loadgen/metrics.py``): only a *completed* request can meet anything; TTFT
met iff the first token came within the TTFT SLO of admission, mean TBT
``(last - first) / (tokens - 1)`` met iff within the TBT SLO (vacuously met for one token).
A request that did not complete (backend failed, timed out, rejected after admission,
client disconnected, at any point) is ``ttft="missed", tbt="missed"``.  A request that ended
with ``client_error`` (an engine's 4xx, or the proxy's, for the client's own mistake) is
judged by neither objective and not counted here: it is no SLO miss.  Labels are bounded
by the config: every configured model x (each configured class, and ``""`` for no class) x
the four verdicts exists from the start at 0; a class the config does not name is counted
as ``""`` (the handlers reject such requests before admission anyway).

Rescue economics (does moving requests pay off?), counted once per request at its end or once
per move, never per token:

- ``moved_requests_total{model,reason,ttft,tbt}``: ended requests that were moved at least
  once, by the reason of their *first* move (a policy ``Move``'s reason, offload or migration,
  or ``failover`` for a stream continued after its backend failed) and the same verdict as
  ``slo_requests_total``.  Retries before the first token after a backend failure are not
  moves (``retries_total`` counts them).  A move counts from the moment the request leaves
  its backend, so a request whose resubmission found no backend is "lost after rescue".
- ``recomputed_prompt_tokens_total{backend}``: per move, the prompt its target backend was
  sent (a token-exact continuation: prompt ids + generated ids kept; an offload: the
  request's prompt, the engine's exact count once it streamed, the proxy's estimate for a
  text prompt that never did), and ``cached_prompt_tokens_total{backend}``: the part of it
  the target engine reported as a prefix-cache hit (``usage.prompt_tokens_details.
  cached_tokens``; vLLM needs ``--enable-prompt-tokens-details``, without it nothing is
  counted).  Their difference is the prefill the moves cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ascendra_proxy import __version__
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.proxy.histogram import FastHistogram

PREFIX = "ascendra_"
MET, MISSED = "met", "missed"
NO_CLASS = ""  # the slo_class label of a request that named no class
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 120)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
# Why a request was refused before admission (``refused_requests_total{reason}``); a fixed
# set, so that the label stays bounded whatever clients send.
REFUSAL_REASONS = (
    "unauthorized",  # missing or wrong client key
    "body_too_large",
    "invalid_json",  # not JSON, or not an object
    "model_not_found",
    "invalid_request",  # any other invalid field (messages, prompt, n, max_tokens, ...)
    "unknown_slo_class",
    "invalid_slo",  # a malformed x-slo-* header
    "slo_not_allowed",  # an SLO beyond what the client key may ask for
    "invalid_body",  # a body that cannot be read (Content-Encoding, cut framing)
    "body_timeout",  # a body not received within connections.body_timeout_s
)
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


DROP_REASONS = (
    "too_many_connections",  # above connections.max_connections: 503, closed
    "header_timeout",  # headers not complete within connections.header_timeout_s: 408
    "malformed_request",  # the HTTP parser rejected it: 400, closed
)


@dataclass(slots=True)
class ConnectionCounts:
    """Client connections of the listener, kept by ``proxy/connections.py``."""

    open: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


@dataclass(frozen=True, slots=True)
class GaugeSample:
    name: str
    help: str
    labels: dict[str, str]
    value: float


class Telemetry(Collector):
    def __init__(
        self,
        backends: Iterable[str],
        gauges: Callable[[], Iterable[GaugeSample]] = tuple,
        models: Iterable[str] = (),
        slo_classes: Iterable[str] = (),
        backend_models: Mapping[str, str] | None = None,
    ) -> None:
        names = list(backends)
        served = dict(backend_models or {})
        self.slo_classes = frozenset(slo_classes)
        labels = (NO_CLASS, *sorted(self.slo_classes))
        verdicts = [(t, b) for t in (MET, MISSED) for b in (MET, MISSED)]
        # (model, slo_class, ttft, tbt) -> requests; every configured series starts at 0
        self.slo: dict[tuple[str, str, str, str], int] = {
            (m, c, t, b): 0 for m in sorted(set(models)) for c in labels for t, b in verdicts
        }
        # histograms by label values; the configured series exist from the start
        self.ttft: dict[tuple[str, str, str], FastHistogram] = {}  # (backend, model, stream)
        self.gaps: dict[tuple[str, str], FastHistogram] = {}  # (backend, model)
        self.durations: dict[tuple[str, str], FastHistogram] = {}  # (model, outcome)
        for backend, model in served.items():
            self.ttft_histogram(backend, model, True)
            self.ttft_histogram(backend, model, False)
            self.gap_histogram(backend, model)
        for model in sorted(set(models)):
            self.durations[(model, Outcome.COMPLETED.value)] = FastHistogram(DURATION_BUCKETS)
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self.relayed: dict[tuple[str, str], int] = {}  # (endpoint, outcome) -> relays
        self.tokens = dict.fromkeys(names, 0)
        self.requests: dict[tuple[str, str], int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.retries = dict.fromkeys(names, 0)
        self.decisions: dict[str, int] = {}
        self.migrations: dict[str, int] = {}  # started streams continued elsewhere, by reason
        self.connections = ConnectionCounts()
        # (model, first move reason, ttft, tbt) -> moved requests, counted at their end
        self.moved: dict[tuple[str, str, str, str], int] = {}
        self.recomputed = dict.fromkeys(names, 0)  # prompt tokens sent to a move's target
        self.cached = dict.fromkeys(names, 0)  # of those, engine-reported prefix-cache hits
        self.gauges = gauges  # live gauges, read at scrape time
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # process_* (CPU, memory, fds, start time)

    # -- recording (hot path: plain arithmetic) --------------------------------------------

    def ttft_histogram(self, backend: str, model: str, stream: bool) -> FastHistogram:
        key = (backend, model, "true" if stream else "false")
        h = self.ttft.get(key)
        if h is None:
            h = self.ttft[key] = FastHistogram(TTFT_BUCKETS)
        return h

    def gap_histogram(self, backend: str, model: str) -> FastHistogram:
        """The inter-token gap histogram a stream looks up once per attempt, not per token."""
        h = self.gaps.get((backend, model))
        if h is None:
            h = self.gaps[(backend, model)] = FastHistogram(GAP_BUCKETS)
        return h

    def request_done(self, model: str, outcome: str, duration_s: float | None = None) -> None:
        key = (model, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        if duration_s is not None:
            h = self.durations.get(key)
            if h is None:
                h = self.durations[key] = FastHistogram(DURATION_BUCKETS)
            h.observe(duration_s)

    def relayed_done(self, endpoint: str, outcome: str) -> None:
        """A relayed request (``proxy/passthrough.py``) ended with ``outcome``."""
        key = (endpoint, outcome)
        self.relayed[key] = self.relayed.get(key, 0) + 1

    def refusal(self, reason: str) -> None:
        """A request refused before admission; ``reason`` is one of ``REFUSAL_REASONS``."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def slo_done(self, state: RequestState) -> None:
        """Count an ended request's SLO verdict (once, at its end; never per token);
        a client error is no verdict."""
        if state.outcome is Outcome.CLIENT_ERROR:
            return
        ttft, tbt = _verdict_labels(state)
        cls = state.slo_class
        label = cls if cls is not None and cls in self.slo_classes else NO_CLASS
        key = (state.model, label, ttft, tbt)
        self.slo[key] = self.slo.get(key, 0) + 1

    def moved_done(self, state: RequestState, reason: str) -> None:
        """Count an ended request that was moved, by its first move's reason and its verdict."""
        if state.outcome is Outcome.CLIENT_ERROR:
            return
        key = (state.model, reason, *_verdict_labels(state))
        self.moved[key] = self.moved.get(key, 0) + 1

    def resubmission(self, backend: str, prompt_tokens: int, cached: int | None) -> None:
        """A move's target attempt ended: the prompt it was sent, the cached part if reported."""
        self.recomputed[backend] = self.recomputed.get(backend, 0) + prompt_tokens
        if cached is not None:
            self.cached[backend] = self.cached.get(backend, 0) + cached

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
        info = GaugeMetricFamily(
            PREFIX + "build_info", "The running proxy's version (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

    def _counters(self) -> Iterator[CounterMetricFamily]:
        yield _counter_of(
            "requests", "Finished requests by outcome", ("model", "outcome"), self.requests
        )
        yield _counter_by(
            "refused_requests",
            "Requests refused before admission, by reason",
            "reason",
            self.refused,
        )
        yield _counter_of(
            "relayed_requests",
            "Requests relayed to an engine outside the scheduler (tokenize, responses, ...)",
            ("endpoint", "outcome"),
            self.relayed,
        )
        yield _counter_of(
            "slo_requests",
            "Ended requests by whether their TTFT and mean TBT met their SLO "
            "(only completed requests can meet)",
            ("model", "slo_class", "ttft", "tbt"),
            self.slo,
        )
        yield _counter_by(
            "streamed_tokens", "Tokens streamed from each backend", "backend", self.tokens
        )
        yield _counter_of(
            "upstream_errors",
            "Upstream failures by kind",
            ("backend", "kind"),
            self.upstream_errors,
        )
        yield _counter_by(
            "retries",
            "Requests retried elsewhere after this backend failed",
            "backend",
            self.retries,
        )
        yield _counter_by("decisions", "Policy decisions by reason", "reason", self.decisions)
        yield _counter_by(
            "dropped_connections",
            "Client connections the proxy closed on its own, by reason",
            "reason",
            self.connections.dropped,
        )
        yield _counter_by(
            "migrations",
            "Started streams continued token-exactly on another backend, by reason",
            "reason",
            self.migrations,
        )
        yield _counter_of(
            "moved_requests",
            "Ended requests that were moved at least once, by their first move's reason and "
            "whether their TTFT and mean TBT met their SLO",
            ("model", "reason", "ttft", "tbt"),
            self.moved,
        )
        yield _counter_by(
            "recomputed_prompt_tokens",
            "Prompt tokens sent to the target backend of each move (offload, migration, failover)",
            "backend",
            self.recomputed,
        )
        yield _counter_by(
            "cached_prompt_tokens",
            "Of the prompt tokens sent to a move's target, those the engine reported cached",
            "backend",
            self.cached,
        )

    def _histograms(self) -> Iterator[HistogramMetricFamily]:
        yield _histogram_of(
            "time_to_first_token_seconds",
            "Time to first token from admission (stream=false: the whole non-streaming answer)",
            ("backend", "model", "stream"),
            self.ttft,
        )
        yield _histogram_of(
            "inter_token_gap_seconds",
            "Gaps between tokens (streams; tokens arriving together: one gap, then zero gaps)",
            ("backend", "model"),
            self.gaps,
        )
        yield _histogram_of(
            "request_duration_seconds",
            "Admitted requests from admission to their end, by outcome",
            ("model", "outcome"),
            self.durations,
        )

    def _live_gauges(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            PREFIX + "client_connections", "Open client connections", self.connections.open
        )
        families: dict[str, GaugeMetricFamily] = {}
        for s in self.gauges():
            fam = families.get(s.name)
            if fam is None:
                fam = families[s.name] = GaugeMetricFamily(
                    PREFIX + s.name, s.help, labels=list(s.labels)
                )
            fam.add_metric(list(s.labels.values()), s.value)
        yield from families.values()


def slo_verdict(state: RequestState) -> tuple[bool, bool]:
    """(TTFT met, mean TBT met) of an ended request, as the load generator judges them.

    Only a completed request can meet either objective (``loadgen.metrics.attained``: failed
    and unfinished requests are misses); then the core's ``ttft_met`` and ``tbt_met``.
    """
    if state.outcome is not Outcome.COMPLETED:
        return False, False
    return state.ttft_met, state.tbt_met


def _verdict_labels(state: RequestState) -> tuple[str, str]:
    ttft_ok, tbt_ok = slo_verdict(state)
    return MET if ttft_ok else MISSED, MET if tbt_ok else MISSED


_Key = TypeVar("_Key", bound=tuple[str, ...])


def _histogram_of(
    name: str, doc: str, labels: tuple[str, ...], table: Mapping[_Key, FastHistogram]
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(PREFIX + name, doc, labels=list(labels))
    for key, h in sorted(table.items()):
        fam.add_metric(list(key), h.cumulative(), sum_value=h.sum)
    return fam


def _counter_by(name: str, doc: str, label: str, table: dict[str, int]) -> CounterMetricFamily:
    return _counter_of(name, doc, (label,), {(key,): n for key, n in table.items()})


def _counter_of(
    name: str, doc: str, labels: tuple[str, ...], table: Mapping[_Key, int]
) -> CounterMetricFamily:
    """One counter family, a sample per key of ``table`` (label values in ``labels`` order)."""
    fam = CounterMetricFamily(PREFIX + name, doc, labels=list(labels))
    for key, n in sorted(table.items()):
        fam.add_metric(list(key), n)
    return fam
