"""Simulation results as loadgen-compatible documents, plus what only a simulator can tell.

Theory of operation: a simulated run is written exactly like a ``loadgen run`` file
(``{"kind": "run", "config", "summary", "requests"}``, see :mod:`loadgen.results`), so the
same tables and plots read it.  The ``summary`` is :func:`loadgen.metrics.summarize` of the
client-side records plus the policy's move counts (``offloads``, ``migrations``, each also
``*_by_reason``, and ``warms``) and ``aborted_computed_tokens``: the tokens engines had
already computed for attempts the proxy then aborted (work a move threw away).  Each
request entry is loadgen's, plus ``route`` (the backends it was dispatched to, in order)
and its ``events`` (offloads, migrations, warm-ups, with time, source, target, reason).
A ``sim`` section adds per-backend engine counters, the role timeline, every decision
reason and the slack predictor's source (``learned`` or ``analytical``; null for a policy
without one).  Everything is a function of the run, never of the wall clock, so equal seeds give
byte-identical files.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ascendra_proxy.sim.flight import Flight
from ascendra_proxy.sim.simulator import SimResult
from loadgen.metrics import summarize
from loadgen.results import record_to_dict

__all__ = ["point_document", "request_dict", "run_document", "sim_section"]


def _sorted(c: Counter[str]) -> dict[str, int]:
    return {k: c[k] for k in sorted(c)}


def move_counts(result: SimResult) -> dict[str, Any]:
    t = result.tally
    return {
        "offloads": sum(t.offloads.values()),
        "migrations": sum(t.migrations.values()),
        "warms": sum(t.warms.values()),
        "offloads_by_reason": _sorted(t.offloads),
        "migrations_by_reason": _sorted(t.migrations),
        "aborted_computed_tokens": sum(t.aborted_computed.values()),
    }


def request_dict(f: Flight) -> dict[str, Any]:
    rec = f.record
    if rec.events is None and f.events:
        rec.events = f.events
    d = record_to_dict(rec)
    d["route"] = list(f.route)
    return d


def sim_section(result: SimResult) -> dict[str, Any]:
    duration = max(result.end_time, 1e-9)
    backends = []
    for b in result.backends:
        s = b.engine.stats()
        backends.append(
            {
                "name": b.name,
                "role": b.info.role.value,
                "steps": b.steps,
                "busy_s": round(b.busy_s, 6),
                "utilization": round(b.busy_s / duration, 6),
                "preemptions": s.num_preemptions,
                "prompt_tokens": s.prompt_tokens_total,
                "generation_tokens": s.generation_tokens_total,
                "prefix_cache_hit_rate": round(s.prefix_cache_hits / s.prefix_cache_queries, 6)
                if s.prefix_cache_queries
                else None,
            }
        )
    t = result.tally
    return {
        "policy": result.policy.name,
        # the slack predictor that answered (Ascendra): "analytical" or "learned"
        "predictor": getattr(result.policy, "predictor_source", None),
        "end_time_s": round(result.end_time, 6),
        "events": result.events,
        "backends": backends,
        "decisions_by_reason": _sorted(t.decisions),
        "drops_by_reason": _sorted(t.drops),
        "skipped_actions": _sorted(t.skipped),
        "aborted_computed_tokens_by_cause": _sorted(t.aborted_computed),
        "roles": list(t.roles),
    }


def point_document(
    result: SimResult, rate: float | None, keep_requests: bool = True
) -> dict[str, Any]:
    """One point: ``rate``, ``summary`` (+ move counts), ``sim`` and optionally ``requests``."""
    summary = summarize(result.records)
    summary.update(move_counts(result))
    summary["interrupted"] = False
    doc: dict[str, Any] = {"rate": rate, "summary": summary, "sim": sim_section(result)}
    if keep_requests:
        doc["requests"] = [request_dict(f) for f in result.flights]
    return doc


def run_document(
    result: SimResult, config: dict[str, Any], rate: float | None, keep_requests: bool = True
) -> dict[str, Any]:
    """A loadgen-compatible run file."""
    return {"kind": "run", "config": config, **point_document(result, rate, keep_requests)}
