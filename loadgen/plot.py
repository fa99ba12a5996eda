"""PNG plots of results files (matplotlib, Agg backend, no display needed).

Theory of operation: :func:`plot_files` loads run and sweep files and writes

- ``attainment_vs_rate.png`` (sweeps only): SLO attainment against offered rate, one line
  per file (its ``--label``: a system or policy), the 90% line, each capacity marked;
- ``attainment_by_class.png`` (when a file has more than one SLO class, or named classes):
  one panel for all requests and one per class, attainment against rate for sweeps (one
  line per file), else bars for runs (one per file);
- ``ttft_cdf.png`` and ``tbt_cdf.png``: CDFs of TTFT and of per-request mean TBT of completed
  requests, one line per run (per sweep point, labelled ``label @ rate``), SLOs dashed;
- ``timeline.png`` (first run, else the highest-rate point of the first sweep): above,
  arrivals, first tokens and completions per time bin; below, one line per request from
  arrival to end with its first token marked (green met its SLO, red missed), plus any
  ``events`` the proxy or simulator recorded on requests (``{"t": s, "kind": "offload" |
  "migration" | ...}``), drawn as they are present.

Plots show what the files hold and skip what they lack; they never invent data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.report import shows_classes
from loadgen.results import load_results

__all__ = ["plot_files"]

MAX_TIMELINE_REQUESTS = 400
EVENT_STYLE = {"offload": ("v", "tab:orange"), "migration": ("D", "tab:purple")}


def plot_files(paths: Sequence[str], out_dir: str, every_timeline: bool = False) -> list[Path]:
    """The plots of the module docstring; with ``every_timeline``, one
    ``timeline-<label>.png`` per run file instead of the first run's ``timeline.png``."""
    import matplotlib

    matplotlib.use("Agg")
    docs = [(_label(p, d), d) for p in paths for d in [load_results(p)]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sweeps = [(label, d) for label, d in docs if d["kind"] == "sweep"]
    if sweeps:
        written.append(_attainment(sweeps, out / "attainment_vs_rate.png"))
    if any(_classes(d) for _, d in docs):
        written.append(_by_class(docs, out / "attainment_by_class.png"))
    series = list(_series(docs))
    if series:
        written.append(_cdf(series, "ttft_s", "TTFT", "slo_ttft_s", out / "ttft_cdf.png"))
        written.append(_cdf(series, "tbt_mean_s", "mean TBT", "slo_tbt_s", out / "tbt_cdf.png"))
        if every_timeline:
            for label, d in docs:
                if d["kind"] == "run":
                    path = out / f"timeline-{_file_part(label)}.png"
                    written.append(_timeline(label, d["requests"], path))
        else:
            label, requests = _timeline_source(docs)
            written.append(_timeline(label, requests, out / "timeline.png"))
    return written


def _file_part(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _label(path: str, doc: dict[str, Any]) -> str:
    return str(doc.get("config", {}).get("label") or Path(path).stem)


def _series(docs: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for label, d in docs:
        if d["kind"] == "run":
            out.append((label, d.get("requests", [])))
        else:
            out.extend((f"{label} @ {p['rate']:g}/s", p.get("requests", [])) for p in d["points"])
    return [(label, reqs) for label, reqs in out if reqs]


def _timeline_source(docs: Sequence[tuple[str, dict[str, Any]]]) -> tuple[str, list[Any]]:
    for label, d in docs:
        if d["kind"] == "run" and d.get("requests"):
            return label, d["requests"]
    for label, d in docs:
        points = [p for p in d.get("points", []) if p.get("requests")]
        if points:
            top = max(points, key=lambda p: p["rate"])
            return f"{label} @ {top['rate']:g}/s", top["requests"]
    return "", []


def _attainment(sweeps: Sequence[tuple[str, dict[str, Any]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, d in sweeps:
        pts = sorted((p["rate"], p["summary"]["slo_attainment"]) for p in d["points"])
        rates = [r for r, a in pts if a is not None]
        att = [a * 100 for _, a in pts if a is not None]
        (line,) = ax.plot(rates, att, marker="o", label=label)
        cap = d.get("capacity_rps_at_90")
        if cap is not None:
            ax.axvline(cap, color=line.get_color(), linestyle=":", linewidth=1)
            ax.annotate(f"{cap:.1f}", (cap, 91), color=line.get_color(), ha="left", fontsize=8)
    ax.axhline(90, color="grey", linestyle="--", linewidth=1, label="90% target")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("SLO attainment (%)  [TTFT and mean TBT]")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("SLO attainment vs load (capacity = rate at 90%)")
    return _save(fig, path)


def _summaries(doc: dict[str, Any]) -> list[tuple[float | None, dict[str, Any]]]:
    if doc["kind"] == "run":
        return [(doc.get("rate"), doc["summary"])]
    return sorted(((p["rate"], p["summary"]) for p in doc["points"]), key=lambda x: x[0])


def _classes(doc: dict[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for _, s in _summaries(doc):
        classes = s.get("attainment_by_class") or []
        if shows_classes(classes):
            names.update((c.get("name") or f"{c['slo_ttft_s']:g}s", None) for c in classes)
    return list(names)


def _class_value(summary: dict[str, Any], name: str) -> float | None:
    for c in summary.get("attainment_by_class") or []:
        if (c.get("name") or f"{c['slo_ttft_s']:g}s") == name:
            return float(c["slo_attainment"])
    return None


def _by_class(docs: Sequence[tuple[str, dict[str, Any]]], path: Path) -> Path:
    """One panel per class (and one for all requests): sweeps as lines against rate, one
    per file; without sweeps, runs as bars, one per file."""
    import matplotlib.pyplot as plt

    names = ["all", *dict.fromkeys(n for _, d in docs for n in _classes(d))]
    sweeps = [(label, d) for label, d in docs if d["kind"] == "sweep"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        if sweeps:
            for label, d in sweeps:
                pts = _summaries(d)
                vals = [_attained(s, name) for _, s in pts]
                rates = [float(r or 0.0) for r, _ in pts]
                ax.plot(rates, [np.nan if v is None else v * 100 for v in vals], marker="o",
                        label=label)  # fmt: skip
            ax.set_xlabel("offered load (requests/s)")
        else:
            runs = [(label, d["summary"]) for label, d in docs if d["kind"] == "run"]
            vals = [_attained(s, name) for _, s in runs]
            ax.bar(range(len(runs)), [0 if v is None else v * 100 for v in vals])
            ax.set_xticks(range(len(runs)), [lab for lab, _ in runs], rotation=30, ha="right")
        ax.axhline(90, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("SLO attainment (%)")
    if sweeps:
        axes[0][-1].legend(loc="lower left", fontsize=7)
    fig.suptitle("SLO attainment per class (dashed: 90% target)", fontsize=10)
    return _save(fig, path)


def _attained(summary: dict[str, Any], name: str) -> float | None:
    if name == "all":
        value = summary.get("slo_attainment")
        return None if value is None else float(value)
    return _class_value(summary, name)


def _cdf(
    series: Sequence[tuple[str, list[dict[str, Any]]]],
    key: str,
    name: str,
    slo_key: str,
    path: Path,
) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    slos: set[float] = set()
    for label, reqs in series:
        vals = np.sort([r[key] for r in reqs if r["outcome"] == "completed" and r[key] is not None])
        if vals.size == 0:
            continue
        ax.plot(vals * 1000, np.arange(1, vals.size + 1) / vals.size, label=label)
        slos.update(r[slo_key] for r in reqs)
    for slo in sorted(slos)[:4]:
        ax.axvline(slo * 1000, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"SLO {slo * 1000:g} ms ",
            (slo * 1000, 0.98),
            fontsize=8,
            rotation=90,
            ha="right",
            va="top",
            color="grey",
        )
    ax.set_xlabel(f"{name} (ms)")
    ax.set_ylabel("share of completed requests")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    if len(series) <= 12:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{name} CDF")
    return _save(fig, path)


def _timeline(label: str, reqs: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=[1, 2])
    arrivals = [r["arrival_s"] for r in reqs]
    firsts = [r["arrival_s"] + r["ttft_s"] for r in reqs if r.get("ttft_s") is not None]
    ends = [r["end_s"] for r in reqs if r.get("end_s") is not None]
    horizon = max(arrivals + firsts + ends + [1e-3])
    bins = np.linspace(0, horizon, min(60, max(5, len(reqs) // 5)) + 1)
    width = bins[1] - bins[0]
    series: list[tuple[list[float], str]] = [
        (arrivals, "arrivals"),
        (firsts, "first tokens"),
        (ends, "ends"),
    ]
    events: dict[str, list[float]] = {}
    for r in reqs:
        for ev in r.get("events") or []:
            events.setdefault(f"{ev.get('kind', 'event')}s", []).append(float(ev["t"]))
    series += [(times, kind) for kind, times in sorted(events.items())]
    for values, name in series:
        counts, _ = np.histogram(values, bins=bins)
        top.step(bins[:-1], counts / width, where="post", label=name)
    top.set_ylabel("per second")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    _request_lines(bottom, reqs)
    bottom.set_xlabel("time since run start (s)")
    bottom.set_ylabel("request")
    top.set_title(f"timeline: {label}")
    return _save(fig, path)


def _request_lines(ax: Any, reqs: list[dict[str, Any]]) -> None:
    step = max(1, len(reqs) // MAX_TIMELINE_REQUESTS)
    shown = sorted(reqs, key=lambda r: r["arrival_s"])[::step]
    seen_kinds: set[str] = set()
    for y, r in enumerate(shown):
        start, end = r["arrival_s"], r.get("end_s")
        first = start + r["ttft_s"] if r.get("ttft_s") is not None else None
        wait_end = first if first is not None else end
        if wait_end is not None:
            ax.plot([start, wait_end], [y, y], color="tab:orange", alpha=0.35, linewidth=1)
        if first is not None and end is not None:
            ax.plot([first, end], [y, y], color="grey", alpha=0.5, linewidth=1)
        if first is not None:
            color = "tab:green" if r.get("attained") else "tab:red"
            ax.plot(first, y, "|", color=color, markersize=4)
        for ev in r.get("events") or []:
            kind = str(ev.get("kind", "event"))
            marker, color = EVENT_STYLE.get(kind, ("o", "black"))
            label = kind if kind not in seen_kinds else None
            seen_kinds.add(kind)
            ax.plot(float(ev["t"]), y, marker, color=color, markersize=4, label=label)
    ax.plot([], [], color="tab:orange", alpha=0.35, label="waiting for first token")
    ax.plot([], [], color="grey", alpha=0.5, label="streaming")
    ax.plot([], [], "|", color="tab:green", label="first token, SLO met")
    ax.plot([], [], "|", color="tab:red", label="first token, SLO missed")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
