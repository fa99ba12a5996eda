"""Workloads: the list of requests a run will send, as plain values.

Theory of operation: :func:`build_workload` turns a :class:`WorkloadSpec` and a seed into a
list of :class:`WorkItem` (arrival offset, prompt and output lengths, SLO and its class name,
shared-prefix group, trace blocks, optional client disconnect).  It is pure: no clock, no I/O
beyond reading a trace file (and a latency profile for a prefill-scaled SLO), no global RNG.
Each aspect draws from its own generator derived from ``(seed, aspect name)``, so changing
the rate keeps the same lengths and SLO classes, and adding disconnects keeps the same
arrivals: a sweep compares like with like.  The live client and the simulator both consume
``WorkItem`` lists.

Lengths come from a trace (rows in file order, the first ``n``; a Mooncake JSON-lines trace
also gives every request its prompt blocks, see :mod:`loadgen.mooncake`), a named fitted workload
(``azure-conv``, ``azure-code``; see :mod:`loadgen.lengths`), or command-line specs.  In a
shared-prefix workload each request picks one of ``groups`` system prompts uniformly; its
prompt is the ``prefix_tokens``-token shared prompt followed by its own sampled length, so
``prompt_tokens`` is the total.  Optional caps clip sampled lengths (to fit a model's
context); ``context_tokens`` clips a prompt to what the model's context leaves after its
output (clipped requests keep their leading blocks and say how many tokens they lost in
``clipped_tokens``; nothing is dropped).  SLO classes (each with a name) are drawn by share
from ``slo_classes``; a :class:`PrefillSlo` instead gives every request a TTFT SLO scaled
from its prefill time on an idle engine.  A share
of requests disconnects ``disconnect_after_s`` after being sent (an exact count, placed at
random).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from loadgen.arrivals import ArrivalSpec, make_arrivals
from loadgen.lengths import LengthDist, load_named_workloads
from loadgen.mooncake import (
    TRACE_BLOCK_TOKENS,
    is_mooncake_path,
    read_mooncake,
    scaled_prompt_tokens,
)
from loadgen.traces import read_trace

__all__ = [
    "DisconnectSpec",
    "PrefillSlo",
    "PrefixSpec",
    "SloClass",
    "WorkItem",
    "WorkloadSpec",
    "build_workload",
    "clip_summary",
    "default_class_name",
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
    slo_class: str = ""  # the SLO class's name
    blocks: tuple[int, ...] = ()  # trace block hash ids of the prompt (Mooncake replay)
    block_tokens: int = 0  # tokens per trace block (with ``blocks``)
    clipped_tokens: int = 0  # prompt tokens cut to fit the model's context


@dataclass(frozen=True, slots=True)
class SloClass:
    ttft_s: float
    tbt_s: float
    share: float = 1.0
    name: str = ""  # empty: named after its numbers (see ``label``)

    def __post_init__(self) -> None:
        if not (self.ttft_s > 0 and self.tbt_s > 0 and self.share > 0):
            raise ValueError(f"SLO class needs positive TTFT, TBT and share, got {self}")

    @property
    def label(self) -> str:
        return self.name or default_class_name(self.ttft_s, self.tbt_s)


def default_class_name(ttft_s: float, tbt_s: float) -> str:
    return f"{ttft_s:g}s/{tbt_s:g}s"


@dataclass(frozen=True, slots=True)
class PrefillSlo:
    """Per-request TTFT SLO: ``factor`` x the prompt's prefill time on an idle engine of
    ``profile`` (chunks of ``chunk_tokens``, default the profile's token budget), at least
    ``floor_s``; one mean TBT SLO for all.  Every request is in class ``name``."""

    factor: float
    floor_s: float
    tbt_s: float
    profile: str
    chunk_tokens: int | None = None
    name: str = "prefill-scaled"

    def __post_init__(self) -> None:
        if not (self.factor > 0 and self.floor_s > 0 and self.tbt_s > 0):
            raise ValueError(f"a prefill-scaled SLO needs positive numbers, got {self}")

    def ttft_fn(self) -> Callable[[int], float]:
        from ascendra_proxy.engine.profile import load_profile

        profile = load_profile(self.profile)
        chunk = self.chunk_tokens or profile.defaults.max_num_batched_tokens

        def ttft(prompt_tokens: int) -> float:
            return max(self.floor_s, self.factor * profile.prefill_time(prompt_tokens, chunk))

        return ttft


def parse_slo_mix(text: str) -> tuple[SloClass, ...]:
    """A named mix (``three-tier``, see ``loadgen/data/workloads.yaml``) or entries
    ``[NAME=]TTFT:TBT:SHARE`` (seconds, seconds, weight): ``"1.0:0.15:0.7,slow=2:0.3:0.3"``."""
    from loadgen.catalog import load_slo_mixes

    mixes = load_slo_mixes()
    if text.strip() in mixes:
        return mixes[text.strip()]
    classes = []
    for part in text.split(","):
        name, sep, numbers = part.strip().rpartition("=")
        fields = numbers.split(":")
        if len(fields) != 3:
            known = ", ".join(sorted(mixes))
            raise ValueError(
                f"SLO mix entry {part.strip()!r}: expected [NAME=]TTFT:TBT:SHARE "
                f"or a named mix ({known})"
            )
        try:
            ttft, tbt, share = (float(f) for f in fields)
        except ValueError:
            raise ValueError(f"SLO mix entry {part.strip()!r}: expected numbers") from None
        classes.append(SloClass(ttft, tbt, share, name.strip() if sep else ""))
    labels = [c.label for c in classes]
    if len(set(labels)) != len(labels):
        raise ValueError(f"SLO mix {text!r}: two classes with one name")
    total = sum(c.share for c in classes)
    return tuple(SloClass(c.ttft_s, c.tbt_s, c.share / total, c.name) for c in classes)


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
    context_tokens: int | None = None  # clip prompts to context - output (counted per item)
    slo_rule: PrefillSlo | None = None  # per-request TTFT instead of ``slo_classes``
    block_tokens: int = TRACE_BLOCK_TOKENS  # tokens per trace block (Mooncake traces)

    def with_rate(self, rate: float) -> WorkloadSpec:
        return replace(self, arrivals=self.arrivals.with_rate(rate))


def rng_for(seed: int, aspect: str) -> np.random.Generator:
    """An independent, reproducible generator for one aspect of a workload."""
    return np.random.default_rng([seed, zlib.crc32(aspect.encode())])


@dataclass(slots=True)
class _Lengths:
    trace_times: list[float] | None
    prompts: np.ndarray
    outputs: np.ndarray
    blocks: list[tuple[int, ...]] | None = None  # per request, for a Mooncake trace


def build_workload(spec: WorkloadSpec) -> list[WorkItem]:
    n = spec.num_requests
    if n < 1:
        raise ValueError(f"a workload needs at least one request, got {n}")
    got = _lengths(spec)
    if got.blocks is not None and spec.prefix is not None:
        raise ValueError("a block trace carries its own prefix sharing; drop the shared prefix")
    prompts, outputs = got.prompts, got.outputs
    if spec.max_prompt_tokens is not None:
        prompts = np.minimum(prompts, spec.max_prompt_tokens)
    if spec.max_output_tokens is not None:
        outputs = np.minimum(outputs, spec.max_output_tokens)
    clipped = np.zeros(n, dtype=np.int64)
    if spec.context_tokens is not None:
        room = spec.context_tokens - outputs
        if int(room.min()) < 1:
            raise ValueError(f"an output length leaves no room in {spec.context_tokens} tokens")
        clipped = np.maximum(prompts - room, 0)
        prompts = prompts - clipped
    arrivals = make_arrivals(spec.arrivals, n, rng_for(spec.seed, "arrivals"), got.trace_times)
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
    items = [
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
            slo_class=classes[slo_idx[i]].label,
            blocks=_kept_blocks(got.blocks[i], int(prompts[i]), spec.block_tokens)
            if got.blocks is not None
            else (),
            block_tokens=spec.block_tokens if got.blocks is not None else 0,
            clipped_tokens=int(clipped[i]),
        )
        for i in range(n)
    ]
    if spec.slo_rule is not None:
        items = _prefill_scaled(items, spec.slo_rule)
    return items


def _kept_blocks(blocks: tuple[int, ...], prompt_tokens: int, block_tokens: int) -> tuple[int, ...]:
    """The blocks a (possibly clipped) prompt still covers."""
    return blocks[: -(-prompt_tokens // block_tokens)]


def _prefill_scaled(items: list[WorkItem], rule: PrefillSlo) -> list[WorkItem]:
    ttft = rule.ttft_fn()
    return [
        replace(it, slo_ttft_s=ttft(it.prompt_tokens), slo_tbt_s=rule.tbt_s, slo_class=rule.name)
        for it in items
    ]


def clip_summary(items: Sequence[WorkItem]) -> dict[str, int]:
    """How many prompts were clipped to the context, and by how many tokens in all."""
    clipped = [it.clipped_tokens for it in items if it.clipped_tokens > 0]
    return {"clipped_prompts": len(clipped), "clipped_tokens": sum(clipped)}


def _trace_lengths(spec: WorkloadSpec, path: str) -> _Lengths:
    n = spec.num_requests
    want_times = spec.arrivals.kind == "trace"
    if is_mooncake_path(path):
        rows = read_mooncake(Path(path))
        if len(rows) < n:
            raise ValueError(f"{path}: asked for {n} requests, the trace has {len(rows)}")
        rows = rows[:n]
        return _Lengths(
            [r.arrived_at for r in rows] if want_times else None,
            np.array([scaled_prompt_tokens(r, spec.block_tokens) for r in rows], dtype=np.int64),
            np.array([r.output_tokens for r in rows], dtype=np.int64),
            [r.hash_ids for r in rows],
        )
    csv_rows = read_trace(Path(path), require_arrivals=want_times)
    if len(csv_rows) < n:
        raise ValueError(f"{path}: asked for {n} requests, the trace has {len(csv_rows)}")
    csv_rows = csv_rows[:n]
    return _Lengths(
        [float(r.arrived_at or 0.0) for r in csv_rows] if want_times else None,
        np.array([r.prompt_tokens for r in csv_rows], dtype=np.int64),
        np.array([r.output_tokens for r in csv_rows], dtype=np.int64),
    )


def _lengths(spec: WorkloadSpec) -> _Lengths:
    """Trace arrival times (or None), prompt and output lengths, and trace blocks."""
    n = spec.num_requests
    got: _Lengths | None = None
    if spec.trace is not None:
        got = _trace_lengths(spec, spec.trace)
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
    prompts = None if got is None else got.prompts
    outputs = None if got is None else got.outputs
    if prompt_dist is not None:  # an explicit distribution overrides trace lengths
        if got is not None and got.blocks is not None:
            raise ValueError("a block trace fixes prompt lengths; drop the prompt length spec")
        prompts = prompt_dist.sample(rng_for(spec.seed, "prompt_len"), n)
    if output_dist is not None:
        outputs = output_dist.sample(rng_for(spec.seed, "output_len"), n)
    if prompts is None or outputs is None:
        raise ValueError("no prompt/output lengths: give a trace, a named workload or length specs")
    times = None if got is None else got.trace_times
    return _Lengths(times, prompts, outputs, None if got is None else got.blocks)
