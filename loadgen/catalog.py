"""Named SLO mixes and trace workloads (``loadgen/data/workloads.yaml``).

Theory of operation: the packaged YAML names, besides the fitted length distributions of
:mod:`loadgen.lengths`, two kinds of reusable definitions:

* ``slo_mixes``: SLO classes by name (``three-tier``: interactive 1 s / 50 ms, standard
  2 s / 150 ms, batch 30 s / 500 ms, a third each); :func:`load_slo_mixes`.
* ``trace_workloads``: a trace file plus the SLO that goes with it (a named mix, or a
  per-request TTFT scaled from the prompt's idle prefill time, :class:`PrefillSlo`) and the
  model context prompts are clipped to; :func:`load_trace_workloads`, and
  :func:`trace_workload_spec`, which turns one into a :class:`WorkloadSpec` for any rate.

Trace files are found in ``$ASCENDRA_TRACES_DIR`` or else ``shared/data/traces`` beside the
repository (:func:`traces_dir`); they are never part of the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from loadgen.arrivals import ArrivalSpec
from loadgen.workloads import PrefillSlo, SloClass, WorkloadSpec

__all__ = [
    "TRACES_ENV",
    "TraceWorkload",
    "load_slo_mixes",
    "load_trace_workloads",
    "source_note",
    "trace_workload_spec",
    "traces_dir",
]

TRACES_ENV = "ASCENDRA_TRACES_DIR"


@dataclass(frozen=True, slots=True)
class TraceWorkload:
    name: str
    trace: str  # relative to traces_dir()
    source: str
    slo_classes: tuple[SloClass, ...]  # what requests carry when there is no slo_rule
    slo_rule: PrefillSlo | None = None
    context_tokens: int | None = None

    @property
    def path(self) -> Path:
        return traces_dir() / self.trace


def traces_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$ASCENDRA_TRACES_DIR``, else ``shared/data/traces`` next to the checkout (or next
    to the folder holding it, for a git worktree)."""
    env = os.environ if env is None else env
    if env.get(TRACES_ENV):
        return Path(env[TRACES_ENV])
    repo = Path(__file__).resolve().parents[1]
    shared = next(
        (p for p in (repo.parent / "shared", repo.parent.parent / "shared") if p.is_dir()),
        repo.parent / "shared",
    )
    return shared / "data" / "traces"


@cache
def _document() -> dict[str, Any]:
    text = resources.files("loadgen").joinpath("data/workloads.yaml").read_text("utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _mix(name: str, entry: Mapping[str, Any]) -> tuple[SloClass, ...]:
    classes = entry.get("classes")
    if not isinstance(classes, Mapping) or not classes:
        raise ValueError(f"workloads.yaml: slo_mixes.{name}.classes: expected a mapping")
    out = [
        SloClass(float(c["ttft_s"]), float(c["tbt_s"]), float(c.get("share", 1.0)), str(cname))
        for cname, c in classes.items()
    ]
    total = sum(c.share for c in out)
    return tuple(SloClass(c.ttft_s, c.tbt_s, c.share / total, c.name) for c in out)


def load_slo_mixes() -> dict[str, tuple[SloClass, ...]]:
    mixes = _document().get("slo_mixes") or {}
    return {name: _mix(name, entry) for name, entry in mixes.items()}


def _rule(entry: Mapping[str, Any], name: str) -> PrefillSlo:
    return PrefillSlo(
        factor=float(entry["prefill_factor"]),
        floor_s=float(entry["floor_s"]),
        tbt_s=float(entry["tbt_s"]),
        profile=str(entry["profile"]),
        chunk_tokens=entry.get("chunk_tokens"),
        name=name,
    )


def load_trace_workloads() -> dict[str, TraceWorkload]:
    mixes = load_slo_mixes()
    out: dict[str, TraceWorkload] = {}
    for name, entry in (_document().get("trace_workloads") or {}).items():
        rule = _rule(entry["slo"], name) if "slo" in entry else None
        if rule is not None:
            classes: tuple[SloClass, ...] = (SloClass(rule.floor_s, rule.tbt_s, 1.0, name),)
        elif entry.get("slo_mix") in mixes:
            classes = mixes[entry["slo_mix"]]
        else:
            where = f"workloads.yaml: trace_workloads.{name}"
            raise ValueError(f"{where}: needs slo or a known slo_mix")
        context = entry.get("context_tokens")
        out[name] = TraceWorkload(
            name=name,
            trace=str(entry["trace"]),
            source=str(entry.get("source", "")),
            slo_classes=classes,
            slo_rule=rule,
            context_tokens=None if context is None else int(context),
        )
    return out


AZURE_SOURCE = "Azure LLM inference trace 2023, Microsoft, CC-BY 4.0"
MOONCAKE_SOURCE = "Mooncake traces, Moonshot AI, FAST'25 (Apache-2.0)"


def source_note(trace: str | None, workload: str | None) -> str | None:
    """The citation results on this trace or workload must carry (None if unknown)."""
    named = load_trace_workloads().get(workload or "")
    if named is not None:
        return named.source or None
    text = f"{trace or ''} {workload or ''}"
    if "splitwise" in text or (workload or "").startswith("azure"):
        return AZURE_SOURCE
    if "mooncake" in text:
        return MOONCAKE_SOURCE
    return None


def trace_workload_spec(
    name: str,
    num_requests: int,
    arrivals: ArrivalSpec,
    seed: int = 0,
    *,
    trace: str | Path | None = None,
    block_tokens: int | None = None,
    context_tokens: int | None = None,
) -> WorkloadSpec:
    """The workload ``name`` (first ``num_requests`` rows) with these arrivals; ``trace``,
    ``block_tokens`` and ``context_tokens`` override the catalog's."""
    known = load_trace_workloads()
    if name not in known:
        raise ValueError(f"unknown trace workload {name!r}; known: {', '.join(sorted(known))}")
    w = known[name]
    spec = WorkloadSpec(
        num_requests=num_requests,
        arrivals=arrivals,
        slo_classes=w.slo_classes,
        trace=str(trace if trace is not None else w.path),
        seed=seed,
        context_tokens=context_tokens if context_tokens is not None else w.context_tokens,
        slo_rule=w.slo_rule,
    )
    if block_tokens is not None:
        from dataclasses import replace

        spec = replace(spec, block_tokens=block_tokens)
    return spec
