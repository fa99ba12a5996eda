"""Why the slow requests were slow: the proxy's request log joined to the client's records.

Theory of operation: the demo starts each proxy with ``--request-log``; every finished
request leaves a line with its wait in the proxy before its first dispatch, its route and
its moves (:mod:`ascendra_proxy.proxy.request_log`).  :func:`join` pairs those lines with
the load generator's records: requests with the same ``max_tokens`` are paired in arrival
order (the client sends in that order; the proxy admits in it up to near-ties of equal
length, which are interchangeable here).  :func:`annotate` then gives every request that
missed its TTFT SLO one cause, first match wins:

* ``offloaded``: the policy moved it LP -> HP before its first token, or sent it to HP from
  the proxy's queue for the same reason, and it was still late;
* ``migrated`` / ``failover``: moved for another reason;
* ``held past deadline``: it waited in the proxy's queue longer than its whole TTFT SLO
  before any engine saw it.  Under ``ascendra`` this is *infeasible-last*: once a request
  can no longer meet its deadline, the LP queue serves it after every request that still
  can, so it waits longest.  That is why its TTFT tail is long while more requests meet
  their SLO;
* ``late on the engine``: dispatched in time, but queued or prefilled too slowly there;
* ``not completed``, or ``no proxy record`` when the join found none.

It also turns each dispatch made to offload or migrate into an ``events`` entry of the
request (model time), which the timeline plots mark.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CAUSES", "annotate", "format_tails", "join", "read_request_log"]

CAUSES = (
    "offloaded",
    "migrated",
    "failover",
    "held past deadline",
    "late on the engine",
    "not completed",
    "no proxy record",
)
SLOWEST_SHOWN = 5

Doc = dict[str, Any]


def read_request_log(path: Path) -> list[Doc]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def join(requests: Sequence[Mapping[str, Any]], entries: Sequence[Doc]) -> list[Doc | None]:
    """The log entry of each request (``None`` where there is none), by length and order."""
    by_length: dict[int, list[Doc]] = defaultdict(list)
    for e in sorted(entries, key=lambda e: e["arrival"]):
        by_length[int(e["max_tokens"])].append(e)
    out: list[Doc | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: requests[i]["arrival_s"])
    for i in order:
        queue = by_length.get(int(requests[i]["output_tokens"]))
        if queue:
            out[i] = queue.pop(0)
    return out


def _cause(request: Mapping[str, Any], entry: Doc | None) -> str:
    if request.get("outcome") != "completed":
        return "not completed"
    if entry is None:
        return "no proxy record"
    reasons = [str(m["reason"]) for m in entry.get("moves") or []]
    if _offloaded(entry):
        return "offloaded"
    if "failover" in reasons:
        return "failover"
    if reasons:
        return "migrated"
    wait = entry.get("first_dispatch_s")
    if wait is not None and wait > entry["slo_ttft_s"]:
        return "held past deadline"
    return "late on the engine"


def _offloaded(entry: Doc) -> bool:
    """Moved as an offload, or sent to HP from the proxy's queue as one."""
    moves = [str(m["reason"]) for m in entry.get("moves") or []]
    routed = [str(hop.get("reason")) for hop in entry.get("route") or []]
    return any(r.startswith("offload") for r in moves + routed)


def _missed_ttft(r: Mapping[str, Any]) -> bool:
    ttft = r.get("ttft_s")
    return r.get("outcome") != "completed" or ttft is None or ttft > r["slo_ttft_s"]


def annotate(doc: Doc, entries: Sequence[Doc], scale: float) -> None:
    """Add each request's proxy view and TTFT-miss cause, its move events, and
    ``doc["tails"]`` (causes counted, the slowest requests)."""
    requests = doc["requests"]
    joined = join(requests, entries)
    causes: Counter[str] = Counter()
    for r, e in zip(requests, joined, strict=True):
        if e is not None:
            wait = e.get("first_dispatch_s")
            r["proxy_wait_s"] = None if wait is None else wait / scale
            r["route"] = [hop["backend"] for hop in e.get("route") or []]
            r["offloaded"] = _offloaded(e)
            r["events"] = [
                {**hop, "t": r["arrival_s"] + hop["t"] / scale, "kind": kind}
                for hop in e.get("route") or []
                if (kind := _event_kind(str(hop.get("reason")))) is not None
            ] or r.get("events")
        if _missed_ttft(r):
            r["ttft_miss_cause"] = _cause(r, e)
            causes[r["ttft_miss_cause"]] += 1
    done = [r for r in requests if r.get("ttft_s") is not None]
    slowest = sorted(done, key=lambda r: r["ttft_s"], reverse=True)[:SLOWEST_SHOWN]
    doc["tails"] = {
        "joined": sum(e is not None for e in joined),
        "ttft_misses": sum(causes.values()),
        "causes": {c: causes[c] for c in CAUSES if causes[c]},
        "slowest": [_row(r) for r in slowest],
    }


def _event_kind(reason: str) -> str | None:
    """The timeline's event for a dispatch made for ``reason`` (a move's target, or a
    request sent to HP from the queue as an offload); ``None`` for ordinary routing."""
    if reason.startswith("offload"):
        return "offload"
    if reason.startswith("migrate"):
        return "migration"
    return None


def _row(r: Mapping[str, Any]) -> Doc:
    return {
        "index": r.get("index"),
        "prompt_tokens": r.get("prompt_tokens"),
        "ttft_s": r.get("ttft_s"),
        "slo_ttft_s": r.get("slo_ttft_s"),
        "proxy_wait_s": r.get("proxy_wait_s"),
        "route": r.get("route"),
        "cause": r.get("ttft_miss_cause", "met"),
        "offloaded": r.get("offloaded", False),
    }


def format_tails(docs: Mapping[str, Doc]) -> list[str]:
    """The report's section on tails: causes of TTFT misses, the slowest requests."""
    lines = ["Why requests missed their TTFT SLO (model time; cause from the proxy's log):"]
    for name, doc in docs.items():
        t = doc.get("tails")
        if not t:
            continue
        causes = ", ".join(f"{n} {c}" for c, n in t["causes"].items()) or "none"
        lines.append(f"  {name}: {t['ttft_misses']} missed: {causes}")
    for name, doc in docs.items():
        t = doc.get("tails")
        if not t or not t["slowest"]:
            continue
        lines.append(f"  {name}, slowest first tokens:")
        for row in t["slowest"]:
            lines.append("    " + _describe(row))
    note = _infeasible_note(docs)
    if note:
        lines.append(note)
    return lines


def _describe(row: Mapping[str, Any]) -> str:
    wait = row["proxy_wait_s"]
    waited = "-" if wait is None else f"{wait * 1000:.0f} ms"
    route = " -> ".join(row["route"] or []) or "-"
    return (
        f"#{row['index']}: TTFT {row['ttft_s'] * 1000:.0f} ms (SLO {row['slo_ttft_s'] * 1000:.0f}),"
        f" prompt {row['prompt_tokens']} tokens, waited {waited} in the proxy, {route}:"
        f" {row['cause']}{' (offloaded)' if row['offloaded'] and row['cause'] == 'met' else ''}"
    )


def _infeasible_note(docs: Mapping[str, Doc]) -> str | None:
    t = (docs.get("ascendra") or {}).get("tails")
    if not t or not t["slowest"]:
        return None
    held = sum(1 for row in t["slowest"] if row["cause"] == "held past deadline")
    if held * 2 < len(t["slowest"]):
        return None
    return (
        f"ascendra's slowest first tokens ({held} of the {len(t['slowest'])} slowest) are requests "
        "it held past their deadline: once a request can no longer meet its TTFT SLO, the LP "
        "queue serves it after every request that still can (infeasible-last), so a few "
        "already-lost requests wait long and more of the others meet their SLO."
    )
