"""Per-request latency records and the run summary: SLO attainment, goodput, capacity.

Theory of operation: a :class:`RequestRecord` is filled by whoever observes a request, the
live client in wall-clock time (``time.perf_counter`` offsets from the run start) or the
simulator in virtual time: the scheduled arrival, each stream chunk that carried at least
one token as ``add_chunk(t, tokens)``, the end and the :class:`Outcome`.  Everything else is
derived here, purely.

Definitions (the paper's, which decide SLO attainment):

- TTFT = first token chunk - *scheduled arrival* (so a late client or a client-side queue
  counts against the server, as it would for a user; ``send_lag`` shows how late we were).
- mean TBT = (last token chunk - first token chunk) / (tokens - 1); undefined for one token
  (then only TTFT is checked).
- a request *attains* its SLO iff it completed and TTFT <= its TTFT SLO and mean TBT <= its
  TBT SLO.  ``slo_attainment`` = attained / all requests, so failed and unfinished requests
  are misses.  Requests the workload disconnects on purpose are left out of the denominator
  (they never can finish; they exercise abort paths), and reported as ``disconnected``.
- ``goodput_rps`` = attained requests / run duration (first arrival to last end).
- capacity = the rate at which attainment falls to 90%, by linear interpolation between the
  two sweep points around the first crossing (:func:`capacity_at`).

``vllm bench serve`` definitions, and how ours differ:

- TPOT = (e2e - TTFT) / (output tokens - 1), i.e. (stream end - first token)/(tokens - 1):
  ``tpot_*`` is exactly that.  Our mean TBT ends at the last *token* instead of the stream
  end (the two differ by the final usage chunk and ``[DONE]``, microseconds).
- ITL = the gap between consecutive *chunks*, pooled over requests, whatever the number of
  tokens in a chunk: ``itl_*`` is exactly that; each gap is stored with its token count.
- TTFT in vLLM is measured from the moment the request is sent; ours from the scheduled
  arrival (identical without ``--max-concurrency`` unless the client lags, see ``send_lag``).
- goodput in vLLM counts completed requests meeting every given SLO (TTFT, TPOT) per second
  of benchmark time; ours is the same count with TTFT from arrival and mean TBT for TPOT.
- vLLM's output-token throughput counts completed requests only; ``throughput_tok_s`` counts
  every token received (partial streams of failed or disconnected requests included).
- Latency percentiles cover completed requests (as vLLM); percentiles are numpy's linear
  interpolation (as vLLM).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = [
    "PERCENTILES",
    "Capacity",
    "Outcome",
    "RequestRecord",
    "attained",
    "capacity_at",
    "class_name",
    "summarize",
]

PERCENTILES = (50, 90, 99)


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # HTTP error, error event, broken connection, timeout
    DISCONNECTED = "disconnected"  # the client disconnected on purpose (workload)
    UNFINISHED = "unfinished"  # the run stopped before the request ended


@dataclass(slots=True)
class RequestRecord:
    index: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int  # requested (max_tokens)
    slo_ttft_s: float
    slo_tbt_s: float
    prefix_group: int | None = None
    sent_s: float | None = None
    end_s: float | None = None
    outcome: Outcome = Outcome.UNFINISHED
    chunk_times: list[float] = field(default_factory=list)  # chunks with >= 1 token
    chunk_tokens: list[int] = field(default_factory=list)
    prompt_tokens_reported: int | None = None  # the server's usage.prompt_tokens
    error: str | None = None
    events: list[dict[str, Any]] | None = None  # offloads, migrations (filled by proxy/sim)
    slo_class: str = ""  # the workload's class name ("" in files written before classes)

    def add_chunk(self, t: float, tokens: int) -> None:
        self.chunk_times.append(t)
        self.chunk_tokens.append(tokens)

    @property
    def tokens(self) -> int:
        return sum(self.chunk_tokens)

    @property
    def ttft_s(self) -> float | None:
        return self.chunk_times[0] - self.arrival_s if self.chunk_times else None

    @property
    def tbt_mean_s(self) -> float | None:
        n = self.tokens
        if n < 2:
            return None
        return (self.chunk_times[-1] - self.chunk_times[0]) / (n - 1)

    @property
    def tpot_s(self) -> float | None:
        n = self.tokens
        if n < 2 or self.end_s is None:
            return None
        return (self.end_s - self.chunk_times[0]) / (n - 1)

    @property
    def e2e_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.arrival_s

    @property
    def send_lag_s(self) -> float | None:
        return None if self.sent_s is None else self.sent_s - self.arrival_s

    def gaps(self) -> list[tuple[float, int]]:
        """Every inter-chunk gap with the number of tokens the later chunk carried."""
        t, n = self.chunk_times, self.chunk_tokens
        return [(t[i] - t[i - 1], n[i]) for i in range(1, len(t))]


def attained(r: RequestRecord) -> bool:
    """The paper's success test: completed, TTFT <= SLO and mean TBT <= SLO."""
    if r.outcome is not Outcome.COMPLETED or r.ttft_s is None or r.ttft_s > r.slo_ttft_s:
        return False
    tbt = r.tbt_mean_s
    return tbt is None or tbt <= r.slo_tbt_s


def _dist(name: str, values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        out: dict[str, float | None] = {f"{name}_mean": None}
        out.update({f"{name}_p{p}": None for p in PERCENTILES})
        return out
    arr = np.asarray(values, dtype=float)
    out = {f"{name}_mean": float(arr.mean())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=True):
        out[f"{name}_p{p}"] = float(v)
    return out


def _run_duration(records: Sequence[RequestRecord]) -> float:
    ends = [r.end_s for r in records if r.end_s is not None]
    ends += [r.chunk_times[-1] for r in records if r.end_s is None and r.chunk_times]
    if not ends:
        return 0.0
    return max(ends) - min(r.arrival_s for r in records)


def _per_second(count: float, duration: float) -> float | None:
    return count / duration if duration > 0 else None


# The code (and first word of the message) of the proxy's overload refusal (a 429 for a
# request whose TTFT deadline no backend can meet; ascendra_proxy/core/admission.py).
SHED_MARK = "deadline_unreachable"


def _shed(r: RequestRecord) -> bool:
    return r.outcome is Outcome.FAILED and r.error is not None and SHED_MARK in r.error


def summarize(records: Sequence[RequestRecord], duration_s: float | None = None) -> dict[str, Any]:
    """The run summary (JSON-ready); ``duration_s`` defaults to first arrival .. last end."""
    duration = _run_duration(records) if duration_s is None else duration_s
    counts = {o: 0 for o in Outcome}
    for r in records:
        counts[r.outcome] += 1
    done = [r for r in records if r.outcome is Outcome.COMPLETED]
    judged = len(records) - counts[Outcome.DISCONNECTED]
    good = sum(1 for r in records if attained(r))
    ttft_ok = sum(1 for r in done if r.ttft_s is not None and r.ttft_s <= r.slo_ttft_s)
    tbt_ok = sum(1 for r in done if (r.tbt_mean_s or 0.0) <= r.slo_tbt_s)
    tokens = sum(r.tokens for r in records)
    summary: dict[str, Any] = {
        "total": len(records),
        "completed": counts[Outcome.COMPLETED],
        "failed": counts[Outcome.FAILED],
        "disconnected": counts[Outcome.DISCONNECTED],
        "unfinished": counts[Outcome.UNFINISHED],
        "shed": sum(1 for r in records if _shed(r)),
        "duration_s": duration,
        "slo_attainment": good / judged if judged else None,
        "ttft_attainment": ttft_ok / judged if judged else None,
        "tbt_attainment": tbt_ok / judged if judged else None,
        "goodput_rps": _per_second(good, duration),
        "request_throughput": _per_second(counts[Outcome.COMPLETED], duration),
        "throughput_tok_s": _per_second(tokens, duration),
        "output_tokens": tokens,
    }
    summary.update(_dist("ttft", [r.ttft_s for r in done if r.ttft_s is not None]))
    summary.update(_dist("tbt_mean", [r.tbt_mean_s for r in done if r.tbt_mean_s is not None]))
    summary.update(_dist("itl", [g for r in done for g, _ in r.gaps()]))
    summary.update(_dist("tpot", [r.tpot_s for r in done if r.tpot_s is not None]))
    summary.update(_dist("e2e", [r.e2e_s for r in done if r.e2e_s is not None]))
    summary.update(_dist("send_lag", [r.send_lag_s for r in records if r.send_lag_s is not None]))
    errors = [
        abs(r.prompt_tokens_reported - r.prompt_tokens)
        for r in records
        if r.prompt_tokens_reported is not None
    ]
    summary["prompt_tokens_max_error"] = max(errors) if errors else None
    summary["attainment_by_class"] = _by_class(records)
    return summary


def class_name(r: RequestRecord) -> str:
    """The record's SLO class; records without one are named after their SLO numbers."""
    return r.slo_class or f"{r.slo_ttft_s:g}s/{r.slo_tbt_s:g}s"


def _by_class(records: Iterable[RequestRecord]) -> list[dict[str, Any]]:
    """Attainment per SLO class (judged requests only, as ``slo_attainment``).

    ``slo_ttft_s`` / ``slo_tbt_s`` are the class's SLOs, or None when they vary by request
    (a prefill-scaled TTFT); then ``slo_ttft_s_min`` / ``_max`` give the range.
    """
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        if r.outcome is not Outcome.DISCONNECTED:
            groups.setdefault(class_name(r), []).append(r)
    out = []
    for name, rs in groups.items():
        n = len(rs)
        done = [r for r in rs if r.outcome is Outcome.COMPLETED]
        ttfts = {r.slo_ttft_s for r in rs}
        tbts = {r.slo_tbt_s for r in rs}
        out.append(
            {
                "name": name,
                "slo_ttft_s": next(iter(ttfts)) if len(ttfts) == 1 else None,
                "slo_tbt_s": next(iter(tbts)) if len(tbts) == 1 else None,
                "slo_ttft_s_min": min(ttfts),
                "slo_ttft_s_max": max(ttfts),
                "requests": n,
                "slo_attainment": sum(1 for r in rs if attained(r)) / n,
                "ttft_attainment": sum(
                    1 for r in done if r.ttft_s is not None and r.ttft_s <= r.slo_ttft_s
                )
                / n,
                "tbt_attainment": sum(1 for r in done if (r.tbt_mean_s or 0.0) <= r.slo_tbt_s) / n,
            }
        )
    out.sort(key=lambda c: (c["slo_ttft_s_min"], c["slo_ttft_s_max"], c["name"]))
    return out


@dataclass(frozen=True, slots=True)
class Capacity:
    """Rate at which attainment crosses ``target``.

    ``status``: ``interpolated`` (``rps`` set); ``above_range`` (every point meets the target;
    capacity is at least ``bound``, the highest rate); ``below_range`` (even the lowest rate
    ``bound`` misses it); ``no_points``.
    """

    rps: float | None
    status: str
    bound: float | None = None


def capacity_at(points: Sequence[tuple[float, float]], target: float = 0.9) -> Capacity:
    """Linear interpolation between the sweep points around the first downward crossing."""
    pts = sorted((float(r), float(a)) for r, a in points)
    if not pts:
        return Capacity(None, "no_points")
    if pts[0][1] < target:
        return Capacity(None, "below_range", pts[0][0])
    for (r0, a0), (r1, a1) in itertools.pairwise(pts):
        if a1 < target:  # a0 >= target here
            return Capacity(r0 + (a0 - target) * (r1 - r0) / (a0 - a1), "interpolated")
    return Capacity(None, "above_range", pts[-1][0])
