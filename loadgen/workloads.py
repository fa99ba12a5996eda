"""Workloads: the list of requests a run will send, as plain values.

Theory of operation: :func:`build_workload` turns a :class:`WorkloadSpec` and a seed into a
list of :class:`WorkItem` (arrival offset, prompt and output lengths, SLO, shared-prefix group,
optional client disconnect).  It is pure: no clock, no I/O beyond reading a trace file, no
global RNG.  Each aspect draws from its own generator derived from ``(seed, aspect name)``, so
changing the rate keeps the same lengths and SLO classes, and adding disconnects keeps the
same arrivals: a sweep compares like with like.  The live client and the simulator both
consume ``WorkItem`` lists.

Lengths come from a trace (rows in file order, the first ``n``), a named fitted workload
(``azure-conv``, ``azure-code``; see :mod:`loadgen.lengths`), or command-line specs.  In a
shared-prefix workload each request picks one of ``groups`` system prompts uniformly; its
prompt is the ``prefix_tokens``-token shared prompt followed by its own sampled length, so
``prompt_tokens`` is the total.  Optional caps clip sampled lengths (to fit a model's
context).  SLO classes are drawn by share from ``slo_classes``.  A share
of requests disconnects ``disconnect_after_s`` after being sent (an exact count, placed at
random).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from loadgen.arrivals import ArrivalSpec, make_arrivals
from loadgen.lengths import LengthDist, load_named_workloads
from loadgen.traces import read_trace

__all__ = [
    "DisconnectSpec",
    "PrefixSpec",
    "SloClass",
    "WorkItem",
    "WorkloadSpec",
    "build_workload",
    "parse_slo_mix",
    "rng_for",
]


@dataclass(frozen=True, slots=True)
class WorkItem:
    index: int
    arrival_s: float
    prompt_tokens: int  # total, including a shared prefix
    output_tokens: int
    slo_ttft_s: float
    slo_tbt_s: float
    prefix_group: int | None
    disconnect_after_s: float | None
    prefix_tokens: int = 0  # leading tokens shared by every request of the prefix group


@dataclass(frozen=True, slots=True)
class SloClass:
    ttft_s: float
    tbt_s: float
    share: float = 1.0

    def __post_init__(self) -> None:
        if not (self.ttft_s > 0 and self.tbt_s > 0 and self.share > 0):
            raise ValueError(f"SLO class needs positive TTFT, TBT and share, got {self}")


def parse_slo_mix(text: str) -> tuple[SloClass, ...]:
    """``"1.0:0.15:0.7,2.0:0.3:0.3"`` -> SLO classes (TTFT s : mean TBT s : share)."""
    classes = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) != 3:
            raise ValueError(f"SLO mix entry {part.strip()!r}: expected TTFT:TBT:SHARE")
        try:
            ttft, tbt, share = (float(f) for f in fields)
        except ValueError:
            raise ValueError(f"SLO mix entry {part.strip()!r}: expected numbers") from None
        classes.append(SloClass(ttft, tbt, share))
    total = sum(c.share for c in classes)
    return tuple(SloClass(c.ttft_s, c.tbt_s, c.share / total) for c in classes)


@dataclass(frozen=True, slots=True)
class PrefixSpec:
    groups: int
    tokens: int

    def __post_init__(self) -> None:
        if self.groups < 1 or self.tokens < 1:
            raise ValueError(f"shared prefix needs groups >= 1 and tokens >= 1, got {self}")


@dataclass(frozen=True, slots=True)
class DisconnectSpec:
    share: float
    after_s: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.share <= 1.0 and self.after_s >= 0):
            raise ValueError(f"disconnect share must be in [0, 1] and delay >= 0, got {self}")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Everything that defines a run's requests (but not how they are sent)."""

    num_requests: int
    arrivals: ArrivalSpec
    slo_classes: tuple[SloClass, ...]
    trace: str | None = None  # CSV path; lengths (and, for trace arrivals, times) from it
    workload: str | None = None  # azure-conv | azure-code, or None when lengths are given
    prompt_len: LengthDist | None = None
    output_len: LengthDist | None = None
    prefix: PrefixSpec | None = None
    disconnect: DisconnectSpec | None = None
    seed: int = 0
    max_prompt_tokens: int | None = None  # caps (before the shared prefix is added)
    max_output_tokens: int | None = None

    def with_rate(self, rate: float) -> WorkloadSpec:
        return replace(self, arrivals=self.arrivals.with_rate(rate))


def rng_for(seed: int, aspect: str) -> np.random.Generator:
    """An independent, reproducible generator for one aspect of a workload."""
    return np.random.default_rng([seed, zlib.crc32(aspect.encode())])


def build_workload(spec: WorkloadSpec) -> list[WorkItem]:
    n = spec.num_requests
    if n < 1:
        raise ValueError(f"a workload needs at least one request, got {n}")
    trace_times, prompts, outputs = _lengths(spec)
    if spec.max_prompt_tokens is not None:
        prompts = np.minimum(prompts, spec.max_prompt_tokens)
    if spec.max_output_tokens is not None:
        outputs = np.minimum(outputs, spec.max_output_tokens)
    arrivals = make_arrivals(spec.arrivals, n, rng_for(spec.seed, "arrivals"), trace_times)
    classes = spec.slo_classes
    if not classes:
        raise ValueError("a workload needs at least one SLO class")
    shares = np.array([c.share for c in classes]) / sum(c.share for c in classes)
    slo_idx = rng_for(spec.seed, "slo").choice(len(classes), size=n, p=shares)
    groups: Sequence[int | None] = [None] * n
    prefix_tokens = 0
    if spec.prefix is not None:
        groups = [int(g) for g in rng_for(spec.seed, "prefix").integers(spec.prefix.groups, size=n)]
        prefix_tokens = spec.prefix.tokens
    disconnect: list[float | None] = [None] * n
    if spec.disconnect is not None and spec.disconnect.share > 0:
        count = round(spec.disconnect.share * n)
        for i in rng_for(spec.seed, "disconnect").choice(n, size=count, replace=False):
            disconnect[int(i)] = spec.disconnect.after_s
    return [
        WorkItem(
            index=i,
            arrival_s=float(arrivals[i]),
            prompt_tokens=int(prompts[i]) + prefix_tokens,
            output_tokens=int(outputs[i]),
            slo_ttft_s=classes[slo_idx[i]].ttft_s,
            slo_tbt_s=classes[slo_idx[i]].tbt_s,
            prefix_group=groups[i],
            disconnect_after_s=disconnect[i],
            prefix_tokens=prefix_tokens,
        )
        for i in range(n)
    ]


def _lengths(spec: WorkloadSpec) -> tuple[list[float] | None, np.ndarray, np.ndarray]:
    """(trace arrival times or None, prompt lengths, output lengths) for ``spec``."""
    n = spec.num_requests
    trace_times: list[float] | None = None
    prompts = outputs = None
    if spec.trace is not None:
        rows = read_trace(Path(spec.trace), require_arrivals=spec.arrivals.kind == "trace")
        if len(rows) < n:
            raise ValueError(f"{spec.trace}: asked for {n} requests, the trace has {len(rows)}")
        rows = rows[:n]
        if spec.arrivals.kind == "trace":
            trace_times = [float(r.arrived_at or 0.0) for r in rows]
        prompts = np.array([r.prompt_tokens for r in rows], dtype=np.int64)
        outputs = np.array([r.output_tokens for r in rows], dtype=np.int64)
    elif spec.arrivals.kind == "trace":
        raise ValueError("trace arrivals need a trace file")
    prompt_dist, output_dist = spec.prompt_len, spec.output_len
    if spec.workload is not None:
        named = load_named_workloads()
        if spec.workload not in named:
            raise ValueError(
                f"unknown workload {spec.workload!r}; known: {', '.join(sorted(named))}"
            )
        prompt_dist = prompt_dist or named[spec.workload].prompt
        output_dist = output_dist or named[spec.workload].output
    if prompt_dist is not None:  # an explicit distribution overrides trace lengths
        prompts = prompt_dist.sample(rng_for(spec.seed, "prompt_len"), n)
    if output_dist is not None:
        outputs = output_dist.sample(rng_for(spec.seed, "output_len"), n)
    if prompts is None or outputs is None:
        raise ValueError("no prompt/output lengths: give a trace, a named workload or length specs")
    return trace_times, prompts, outputs
