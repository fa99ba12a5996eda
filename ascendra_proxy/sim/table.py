"""Side-by-side tables of simulated runs and sweeps, and the comparison document.

Theory of operation: pure formatting of loadgen-shaped documents (``kind`` run or sweep),
one column per policy.  For sweeps the rows are the rates (SLO attainment in percent), then
the capacity at 90% attainment and its ratio to ``round_robin`` (or to the first column
when round-robin is not among them).  A capacity outside the swept range prints as ``>R``
or ``<R``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["capacity_cell", "comparison_document", "format_comparison"]

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


def format_comparison(docs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    names = [n for n, _ in docs]
    if all(d["kind"] == "run" for _, d in docs):
        rows = [
            [label, *(_cell(d["summary"].get(key), kind) for _, d in docs)]
            for label, key, kind in _RUN_ROWS
        ]
        return _grid(["", *names], rows)
    rates = sorted({p["rate"] for _, d in docs for p in d["points"]})
    rows = []
    for r in rates:
        row = [f"{r:g} req/s"]
        for _, d in docs:
            att = next(
                (p["summary"]["slo_attainment"] for p in d["points"] if p["rate"] == r), None
            )
            row.append(_cell(att, "pct"))
        rows.append(row)
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
                    }
                    for p in points
                ],
            }
        )
    return {"kind": "comparison", "policies": out}
