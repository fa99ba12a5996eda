"""Results files: records and summaries to and from JSON.

Theory of operation: a run file is ``{"kind": "run", "config": {...}, "summary": {...},
"requests": [...]}``; a sweep file is ``{"kind": "sweep", "config", "capacity_rps_at_90",
"capacity_status", "capacity_bound", "points": [{"rate", "summary", "requests"}]}``.  A
request entry holds its inputs (arrival, lengths, SLO), outcome, the derived scalars for
reading by eye (TTFT, mean TBT, e2e, attained), and the stream losslessly as
``first_chunk_tokens`` plus ``gaps_s``/``gap_tokens`` (every inter-chunk gap with the tokens
it covered); chunk times are rebuilt from TTFT and the gaps when loading.  Times are seconds,
relative to the run start.  Writing goes to a temporary file first, then renames it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from loadgen.metrics import Outcome, RequestRecord, attained

__all__ = ["load_results", "record_from_dict", "record_to_dict", "write_json"]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 7)


def record_to_dict(r: RequestRecord) -> dict[str, Any]:
    gaps = r.gaps()
    out: dict[str, Any] = {
        "index": r.index,
        "outcome": r.outcome.value,
        "arrival_s": _r(r.arrival_s),
        "sent_s": _r(r.sent_s),
        "end_s": _r(r.end_s),
        "prompt_tokens": r.prompt_tokens,
        "prompt_tokens_reported": r.prompt_tokens_reported,
        "output_tokens": r.output_tokens,
        "tokens": r.tokens,
        "slo_ttft_s": r.slo_ttft_s,
        "slo_tbt_s": r.slo_tbt_s,
        "prefix_group": r.prefix_group,
        "slo_class": r.slo_class,
        "ttft_s": _r(r.ttft_s),
        "tbt_mean_s": _r(r.tbt_mean_s),
        "e2e_s": _r(r.e2e_s),
        "attained": attained(r),
        "first_chunk_tokens": r.chunk_tokens[0] if r.chunk_tokens else 0,
        "gaps_s": [round(g, 7) for g, _ in gaps],
        "gap_tokens": [n for _, n in gaps],
    }
    if r.error is not None:
        out["error"] = r.error
    if r.events is not None:
        out["events"] = r.events
    return out


def record_from_dict(d: dict[str, Any]) -> RequestRecord:
    r = RequestRecord(
        index=int(d["index"]),
        arrival_s=float(d["arrival_s"]),
        prompt_tokens=int(d["prompt_tokens"]),
        output_tokens=int(d["output_tokens"]),
        slo_ttft_s=float(d["slo_ttft_s"]),
        slo_tbt_s=float(d["slo_tbt_s"]),
        prefix_group=d.get("prefix_group"),
        sent_s=d.get("sent_s"),
        end_s=d.get("end_s"),
        outcome=Outcome(d["outcome"]),
        prompt_tokens_reported=d.get("prompt_tokens_reported"),
        error=d.get("error"),
        events=d.get("events"),
        slo_class=str(d.get("slo_class") or ""),
    )
    if d.get("ttft_s") is not None:
        t = r.arrival_s + float(d["ttft_s"])
        r.add_chunk(t, int(d.get("first_chunk_tokens", 1)))
        for gap, n in zip(d.get("gaps_s", []), d.get("gap_tokens", []), strict=True):
            t += float(gap)
            r.add_chunk(t, int(n))
    return r


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    p = Path(path)
    if p.parent != Path():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, p)


def load_results(path: str | Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(Path(path).read_bytes())
    if doc.get("kind") not in ("run", "sweep"):
        raise ValueError(f"{path}: not a loadgen results file (no 'kind': 'run' | 'sweep')")
    return doc
