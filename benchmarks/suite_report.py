"""The capacity suite's table and plots (pure formatting of the suite's results).

One row per workload and policy: the median capacity at 90% attainment over the windows
(``<x`` when the median window never reached 90%, even at ``x``, its lowest rate),
its ratio to round-robin and to the best baseline of that workload (the best of
``round_robin``, ``least_loaded``, ``prefix_aware``, named in the ``best baseline`` column),
its share of the ceiling, and on the overload workload the median goodput at each factor of
round-robin's capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASELINES = ("round_robin", "least_loaded", "prefix_aware")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _ratio_text(cell: dict[str, Any], base: dict[str, Any]) -> str:
    """``cell``'s capacity over ``base``'s; a bound on either side makes it a bound."""
    a, b = cell.get("capacity_bound"), base.get("capacity_bound")
    if a is None or not b:
        return "-"
    marks = (cell.get("capacity_mark", ""), base.get("capacity_mark", ""))
    if marks == ("", ""):
        return f"{a / b:.2f}"
    if marks in (("", "<"), (">", ""), (">", "<")):
        return f">{a / b:.2f}"
    if marks in (("<", ""), ("", ">"), ("<", ">")):
        return f"<{a / b:.2f}"
    return "-"


def table_rows(
    workloads: Sequence[str],
    policies: Sequence[str],
    capacities: dict[str, dict[str, Any]],
    ceilings: dict[str, float],
    overload: dict[str, dict[str, Any]],
    overload_workload: str,
) -> list[dict[str, Any]]:
    rows = []
    for wn in workloads:
        caps = {p: capacities.get(wn, {}).get(p, {}).get("capacity_rps_at_90") for p in policies}
        known = {p: c for p, c in caps.items() if p in BASELINES and c is not None}
        if not known:  # no baseline reached 90% in its median window: the largest bound
            bounds = {
                p: capacities.get(wn, {}).get(p, {}).get("capacity_bound")
                for p in policies
                if p in BASELINES
            }
            known = {p: b for p, b in bounds.items() if b is not None}
        best = max(known, key=lambda p: known[p]) if known else None
        rr = caps.get("round_robin")
        cells = {p: capacities.get(wn, {}).get(p, {}) for p in policies}
        for p in policies:
            cap = caps[p]
            goodput = {}
            if wn == overload_workload and p in overload:
                goodput = {f: c.get("goodput_rps") for f, c in overload[p].items()}
            rows.append(
                {
                    "workload": wn,
                    "policy": p,
                    "capacity_rps_at_90": cap,
                    "capacity_text": cells[p].get("capacity_text")
                    or ("-" if cap is None else f"{cap:.2f}"),
                    "x_round_robin_text": _ratio_text(cells[p], cells.get("round_robin", {})),
                    "x_best_baseline_text": _ratio_text(cells[p], cells.get(best or "", {})),
                    "x_round_robin": _ratio(cap, rr),
                    "best_baseline": best,
                    "x_best_baseline": _ratio(cap, known.get(best) if best else None),
                    "ceiling_rps": ceilings.get(wn),
                    "pct_of_ceiling": None
                    if _ratio(cap, ceilings.get(wn)) is None
                    else 100 * cap / ceilings[wn],  # type: ignore[operator]
                    "overload_goodput_rps": goodput,
                }
            )
    return rows


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_table(
    rows: Sequence[dict[str, Any]], factors: Sequence[float], markdown: bool = False
) -> str:
    head = [
        "workload",
        "policy",
        "cap@90% (req/s)",
        "x RR",
        "x best baseline",
        "% of ceiling",
        "goodput @ " + " / ".join(f"{f:g}x" for f in factors) + " RR cap (req/s)",
    ]
    body = []
    for r in rows:
        g = r["overload_goodput_rps"]
        good = " / ".join(_num(g.get(f"{f:g}x"), ".2f") for f in factors) if g else "-"
        best = r["best_baseline"]
        body.append(
            [
                r["workload"],
                r["policy"] + (" (best baseline)" if r["policy"] == best else ""),
                r["capacity_text"],
                r["x_round_robin_text"],
                r["x_best_baseline_text"] + ("" if best is None else f" ({best})"),
                _num(r["pct_of_ceiling"], ".0f")
                + ("" if r["ceiling_rps"] is None else f" of {r['ceiling_rps']:.1f}"),
                good,
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(x, widths, strict=True))
        )
        for x in [head, *body]
    )


def plot_suite(doc: dict[str, Any], out: Path) -> None:
    """``capacity.png`` (capacity per workload and policy, ceiling marked) and, per workload,
    ``attainment_<workload>.png`` (every measured point of every search)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["table"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(3.2 * len(workloads), 3.4), squeeze=False)
    for ax, wn in zip(axes[0], workloads, strict=True):
        caps = [
            next(r["capacity_rps_at_90"] for r in rows if r["workload"] == wn and r["policy"] == p)
            or 0.0
            for p in policies
        ]
        ax.bar(range(len(policies)), caps, color=[f"C{i}" for i in range(len(policies))])
        ceiling = doc["ceilings"][wn]["ceiling_rps"]
        ax.axhline(ceiling, color="k", ls="--", lw=1, label=f"ceiling {ceiling:.1f}")
        ax.set_xticks(range(len(policies)), policies, rotation=45, ha="right", fontsize=7)
        ax.set_title(wn, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("capacity at 90% (req/s)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "capacity.png", dpi=110)
    plt.close(fig)
    for wn in workloads:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for i, p in enumerate(policies):
            seeds = doc["capacities"][wn][p]["seeds"]
            pts = sorted((pt["rate"], pt["attainment"]) for s in seeds for pt in s["points"])
            ax.plot(
                [x for x, _ in pts],
                [100 * y for _, y in pts],
                "o",
                color=f"C{i}",
                label=p,
                alpha=0.7,
            )
        ax.axhline(90, color="k", lw=0.5)
        ax.set_xlabel("rate (req/s)")
        ax.set_ylabel("SLO attainment (%)")
        ax.set_title(f"{wn}: every searched point, all windows", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"attainment_{wn}.png", dpi=110)
        plt.close(fig)
