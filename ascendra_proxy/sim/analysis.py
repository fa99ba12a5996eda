"""Why requests miss their SLO: a per-request breakdown of a simulated run document.

Theory of operation: pure functions over a run document's ``requests`` (each with
``route`` and ``events``, see :mod:`.report`).  A request misses on TTFT, on mean TBT, on
both, or by not completing.  :func:`breakdown` counts misses by kind and groups requests by
where they ran (their last backend's role), whether they were offloaded or migrated,
prompt length and (when the run has more than one) SLO class, with the attainment of each
group; :func:`format_breakdown` prints it.  This
is what tells a policy author *which* requests a policy loses, not only how many.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["breakdown", "format_breakdown"]

PROMPT_BUCKETS = (512, 1024, 2048, 4096)


def _miss_kind(r: Mapping[str, Any]) -> str:
    if r["outcome"] != "completed":
        return "not_completed"
    ttft_bad = r["ttft_s"] is None or r["ttft_s"] > r["slo_ttft_s"]
    tbt = r.get("tbt_mean_s")
    tbt_bad = tbt is not None and tbt > r["slo_tbt_s"]
    if ttft_bad and tbt_bad:
        return "ttft_and_tbt"
    if ttft_bad:
        return "ttft"
    if tbt_bad:
        return "tbt"
    return "met"


def _bucket(prompt: int) -> str:
    """``"1: 513-1024"``: the index keeps the buckets in order when sorted as text."""
    lo = 0
    for i, hi in enumerate(PROMPT_BUCKETS):
        if prompt <= hi:
            return f"{i}: {lo + 1}-{hi}"
        lo = hi
    return f"{len(PROMPT_BUCKETS)}: >{PROMPT_BUCKETS[-1]}"


def _path(r: Mapping[str, Any], roles: Mapping[str, str]) -> str:
    kinds = {e.get("kind") for e in r.get("events") or []}
    route = r.get("route") or []
    where = roles.get(route[-1], "?") if route else "none"
    moved = "+".join(sorted(k for k in kinds if k in ("offload", "migration"))) or "direct"
    return f"{moved} -> {where}"


def breakdown(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Miss kinds and attainment by path and prompt length, for a run document."""
    reqs = doc.get("requests") or []
    roles = {b["name"]: b["role"] for b in doc.get("sim", {}).get("backends", [])}
    kinds = Counter(_miss_kind(r) for r in reqs)
    groups: dict[str, dict[str, Counter[str]]] = {"path": {}, "prompt": {}}
    if len({r.get("slo_class") or "" for r in reqs}) > 1:
        groups["class"] = {}
    for r in reqs:
        k = _miss_kind(r)
        for axis, key in (("path", _path(r, roles)), ("prompt", _bucket(r["prompt_tokens"]))):
            groups[axis].setdefault(key, Counter())[k] += 1
        if "class" in groups:
            groups["class"].setdefault(r.get("slo_class") or "-", Counter())[k] += 1
    out: dict[str, Any] = {"requests": len(reqs), "kinds": dict(sorted(kinds.items()))}
    for axis, table in groups.items():
        out[axis] = {
            key: {"requests": sum(c.values()), "met": c["met"], "misses": dict(sorted(c.items()))}
            for key, c in sorted(table.items())
        }
    backends = doc.get("sim", {}).get("backends", [])
    out["backends"] = {
        b["name"]: {"role": b["role"], "utilization": b["utilization"]} for b in backends
    }
    served: Counter[str] = Counter()
    for r in reqs:
        if r.get("route"):
            served[r["route"][-1]] += 1
    out["served_by"] = dict(sorted(served.items()))
    return out


def format_breakdown(name: str, b: Mapping[str, Any]) -> str:
    n = max(b["requests"], 1)
    kinds = ", ".join(f"{k} {v} ({v / n:.1%})" for k, v in b["kinds"].items())
    lines = [f"{name}: {b['requests']} requests: {kinds}"]
    util = ", ".join(
        f"{k} ({v['role']}) {v['utilization']:.0%} busy, served {b['served_by'].get(k, 0)}"
        for k, v in b["backends"].items()
    )
    lines.append(f"  backends: {util}")
    for axis in ("path", "prompt", "class"):
        for key, g in b.get(axis, {}).items():
            misses = {k: v for k, v in g["misses"].items() if k != "met"}
            rate = g["met"] / max(g["requests"], 1)
            lines.append(f"  {axis} {key:<24} {g['requests']:>5} met {rate:6.1%}  misses {misses}")
    return "\n".join(lines)
