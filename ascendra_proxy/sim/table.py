"""Side-by-side tables of simulated runs and sweeps, and the comparison document.

Theory of operation: pure formatting of loadgen-shaped documents (``kind`` run or sweep),
one column per policy.  For sweeps the rows are the rates (SLO attainment in percent), then
the capacity at 90% attainment and its ratio to ``round_robin`` (or to the first column
when round-robin is not among them).  A capacity outside the swept range prints as ``>R``
or ``<R``.  When the runs have SLO classes (more than one, or named ones), each class adds
a row of its attainment (under its rate, for sweeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadgen.report import shows_classes

__all__ = ["capacity_cell", "class_attainment", "comparison_document", "format_comparison"]

_RUN_ROWS = (
    ("SLO attainment", "slo_attainment", "pct"),
    ("TTFT attainment", "ttft_attainment", "pct"),
    ("TBT attainment", "tbt_attainment", "pct"),
    ("TTFT p50 (ms)", "ttft_p50", "ms"),
    ("TTFT p90 (ms)", "ttft_p90", "ms"),
    ("TTFT p99 (ms)", "ttft_p99", "ms"),
    ("mean TBT p50 (ms)", "tbt_mean_p50", "ms"),
    ("mean TBT p90 (ms)", "tbt_mean_p90", "ms"),
    ("goodput (req/s)", "goodput_rps", "num"),
    ("completed", "completed", "int"),
    ("offloads", "offloads", "int"),
    ("migrations", "migrations", "int"),
)


def _cell(v: Any, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{v * 100:.1f}%"
    if kind == "ms":
        return f"{v * 1000:.0f}"
    if kind == "num":
        return f"{v:.2f}"
    return str(v)


def capacity_cell(doc: dict[str, Any]) -> str:
    cap = doc.get("capacity_rps_at_90")
    if cap is not None:
        return f"{cap:.2f}"
    bound = doc.get("capacity_bound")
    status = doc.get("capacity_status")
    if status == "above_range" and bound is not None:
        return f">{bound:g}"
    if status == "below_range" and bound is not None:
        return f"<{bound:g}"
    return "-"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for r in table:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _attainment_at(d: dict[str, Any], rate: float) -> Any:
    return next((p["summary"]["slo_attainment"] for p in d["points"] if p["rate"] == rate), None)


def class_attainment(summary: dict[str, Any]) -> dict[str, float]:
    """Attainment per SLO class name, or nothing when the run has no classes worth showing."""
    classes = summary.get("attainment_by_class") or []
    if not shows_classes(classes):
        return {}
    return {str(c["name"]): c["slo_attainment"] for c in classes}


def _class_rows(summaries: Sequence[dict[str, Any] | None], indent: str) -> list[list[str]]:
    per = [class_attainment(s) if s is not None else {} for s in summaries]
    names = list(dict.fromkeys(n for p in per for n in p))
    return [[f"{indent}class {n}", *(_cell(p.get(n), "pct") for p in per)] for n in names]


def _summary_at(d: dict[str, Any], rate: float) -> dict[str, Any] | None:
    return next((p["summary"] for p in d["points"] if p["rate"] == rate), None)


def format_comparison(docs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    names = [n for n, _ in docs]
    if all(d["kind"] == "run" for _, d in docs):
        rows = [
            [label, *(_cell(d["summary"].get(key), kind) for _, d in docs)]
            for label, key, kind in _RUN_ROWS
        ]
        rows += _class_rows([d["summary"] for _, d in docs], "")
        return _grid(["", *names], rows)
    rates = sorted({p["rate"] for _, d in docs for p in d["points"]})
    rows = []
    for r in rates:
        summaries = [_summary_at(d, r) for _, d in docs]
        att = [None if s is None else s["slo_attainment"] for s in summaries]
        rows.append([f"{r:g} req/s", *(_cell(a, "pct") for a in att)])
        rows += _class_rows(summaries, "  ")
    rows.append(["capacity @90%", *(capacity_cell(d) for _, d in docs)])
    base_name = "round_robin" if "round_robin" in names else names[0]
    base = dict(docs)[base_name].get("capacity_rps_at_90")
    ratios = []
    for _, d in docs:
        cap = d.get("capacity_rps_at_90")
        ratios.append("-" if cap is None or not base else f"{cap / base:.2f}x")
    rows.append([f"vs {base_name}", *ratios])
    return _grid(["SLO attainment", *names], rows)


def comparison_document(docs: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A small summary of several runs or sweeps (the full files sit next to it)."""
    out = []
    for name, d in docs:
        points = d["points"] if d["kind"] == "sweep" else [d]
        out.append(
            {
                "policy": name,
                "capacity_rps_at_90": d.get("capacity_rps_at_90"),
                "capacity_status": d.get("capacity_status"),
                "points": [
                    {
                        "rate": p["rate"],
                        **{
                            k: p["summary"].get(k)
                            for k in (
                                "slo_attainment",
                                "ttft_attainment",
                                "tbt_attainment",
                                "offloads",
                                "migrations",
                            )
                        },
                        "attainment_by_class": class_attainment(p["summary"]),
                    }
                    for p in points
                ],
            }
        )
    return {"kind": "comparison", "policies": out}
