"""The demo's outputs: per-policy results files, the summary, the plots and the table.

Theory of operation: :func:`policy_document` turns one :class:`PolicyRun` into a loadgen
"run" results file in model time (so ``loadgen plot`` reads it and its numbers are the
emulated A100's), keeping the wall-clock summary beside it.  :func:`summary_document`
gathers what was run and the headline numbers of every policy.  :func:`format_report` prints
one column per policy; :func:`headline` says, in one sentence, how many more requests met
both SLOs than under the first policy; below it, why requests missed their TTFT SLO and the
slowest ones (:mod:`.tails`).  :func:`write_plots` draws the attainment bars here and the
TTFT/TBT CDFs and every policy's timeline with :mod:`loadgen.plot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ascendra_proxy.demo.cpu import verdict
from ascendra_proxy.demo.load import PolicyRun, to_model_time
from ascendra_proxy.demo.settings import DemoSettings
from ascendra_proxy.demo.tails import annotate, format_tails
from loadgen.metrics import attained, summarize
from loadgen.report import _num, _pct
from loadgen.results import record_to_dict

__all__ = ["format_report", "headline", "policy_document", "summary_document", "write_plots"]

Doc = dict[str, Any]


def policy_document(
    run: PolicyRun,
    settings: DemoSettings,
    config_path: str,
    proxy_requests: Sequence[Doc] = (),
) -> Doc:
    """The run file of one policy; ``proxy_requests``: the proxy's request log, which
    explains the TTFT misses (:mod:`.tails`)."""
    scale = settings.time_scale
    records = [to_model_time(r, scale) for r in run.records]
    summary = summarize(records, run.duration_s / scale)
    wall = summarize(run.records, run.duration_s)
    summary["attained"] = sum(1 for r in records if attained(r))
    config = {**settings.to_json(), "label": run.policy, "policy": run.policy}
    config["proxy_config"] = config_path
    doc: Doc = {
        "kind": "run",
        "config": config,
        "rate": settings.rate,
        "summary": summary,
        "wall_clock": {"rate": settings.wall_rate, "summary": wall},
        "proxy": run.proxy,
        "cpu": run.cpu,
        "warning": verdict(run.cpu, wall.get("send_lag_p99"), scale),
        "requests": [record_to_dict(r) for r in records],
    }
    annotate(doc, proxy_requests, scale)
    return doc


_HEADLINE_KEYS = (
    "total",
    "completed",
    "failed",
    "unfinished",
    "attained",
    "slo_attainment",
    "ttft_attainment",
    "tbt_attainment",
    "goodput_rps",
    "ttft_p50",
    "ttft_p90",
    "ttft_p99",
    "tbt_mean_p50",
    "tbt_mean_p90",
    "tbt_mean_p99",
    "duration_s",
)


def summary_document(
    settings: DemoSettings,
    docs: Mapping[str, Doc],
    processes: Sequence[tuple[str, int]],
    runtime_s: float,
) -> Doc:
    policies = {
        name: {
            "summary": {k: d["summary"].get(k) for k in _HEADLINE_KEYS},
            "proxy": {k: v for k, v in d["proxy"].items() if k != "decisions"},
            "cpu": d["cpu"],
            "warning": d["warning"],
        }
        for name, d in docs.items()
    }
    return {
        "kind": "demo_summary",
        "settings": settings.to_json(),
        "headline": headline(docs),
        "policies": policies,
        "processes": [{"name": n, "pid": p} for n, p in processes],
        "runtime_s": runtime_s,
    }


def headline(docs: Mapping[str, Doc]) -> str | None:
    """'ascendra met both SLOs for X of N requests, round_robin for Y: +Z (+P points).'"""
    names = list(docs)
    if len(names) < 2:
        return None
    base, best = names[0], names[-1]
    a, b = docs[base]["summary"], docs[best]["summary"]
    diff = b["attained"] - a["attained"]
    points = (b["slo_attainment"] - a["slo_attainment"]) * 100
    return (
        f"{best} met both SLOs for {b['attained']} of {b['total']} requests, {base} for "
        f"{a['attained']} of {a['total']}: {diff:+d} requests ({points:+.1f} points)."
    )


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _by_role(values: Mapping[str, float | None]) -> tuple[float, float, float] | None:
    """(engines, proxy, client): engines summed."""
    engines = [v for k, v in values.items() if k.startswith("engine") and v is not None]
    proxy, client = values.get("proxy"), values.get("client")
    if not engines or proxy is None or client is None:
        return None
    return sum(engines), proxy, client


def _cores(cpu: Mapping[str, Any]) -> str:
    roles = _by_role(cpu.get("process_core_share") or {})
    return "-" if roles is None else "/".join(f"{v:.2f}" for v in roles)


def _waits(doc: Mapping[str, Any], key: str) -> str:
    """Run-queue wait per wake-up in model ms: worst engine / proxy / client."""
    waits = doc["cpu"].get(key) or {}
    engines = [v for k, v in waits.items() if k.startswith("engine") and v is not None]
    worst = {"engine": max(engines, default=None), "proxy": waits.get("proxy")}
    roles = _by_role({**worst, "client": waits.get("client")})
    if roles is None:
        return "-"
    scale = doc["config"]["time_scale"]
    return "/".join(f"{v / scale * 1000:.1f}" for v in roles)


_ROWS: tuple[tuple[str, Any], ...] = (
    ("SLO attainment (TTFT and TBT)", lambda d: _pct(d["summary"]["slo_attainment"])),
    ("  requests meeting both", lambda d: f"{d['summary']['attained']} / {d['summary']['total']}"),
    ("  TTFT met", lambda d: _pct(d["summary"]["ttft_attainment"])),
    ("  mean TBT met", lambda d: _pct(d["summary"]["tbt_attainment"])),
    ("goodput (req/s)", lambda d: _num(d["summary"]["goodput_rps"])),
    ("TTFT p50 (ms)", lambda d: _ms(d["summary"]["ttft_p50"])),
    ("TTFT p90 (ms)", lambda d: _ms(d["summary"]["ttft_p90"])),
    ("TTFT p99 (ms)", lambda d: _ms(d["summary"]["ttft_p99"])),
    ("mean TBT p50 (ms)", lambda d: _ms(d["summary"]["tbt_mean_p50"])),
    ("mean TBT p90 (ms)", lambda d: _ms(d["summary"]["tbt_mean_p90"])),
    ("offloads LP -> HP", lambda d: str(d["proxy"]["offloads"])),
    (
        "migrations (refused)",
        lambda d: f"{d['proxy']['migrations']} ({d['proxy']['migrations_refused']})",
    ),
    ("failed / unfinished", lambda d: f"{d['summary']['failed']} / {d['summary']['unfinished']}"),
    (
        "upstream errors (retried)",
        lambda d: f"{d['proxy']['upstream_errors']} ({d['proxy']['retries']})",
    ),
    ("CPU cores: engines/proxy/client", lambda d: _cores(d["cpu"])),
    ("CPU wait/wake-up (ms), mean", lambda d: _waits(d, "run_queue_wait_per_slice_s")),
    ("  in the worst second", lambda d: _waits(d, "worst_interval_wait_per_slice_s")),
    ("machine busy (anyone's work)", lambda d: _pct(d["cpu"].get("machine_busy"))),
)


def format_report(settings: DemoSettings, docs: Mapping[str, Doc], runtime_s: float) -> str:
    names = list(docs)
    width = max(17, *(len(n) + 2 for n in names))
    lines = ["ascendra-proxy demo: " + ("quick smoke run" if settings.quick else "full run")]
    lines += ["  " + line for line in settings.describe()]
    lines.append("")
    lines.append(f"{'':<32}" + "".join(f"{n:>{width}}" for n in names))
    for label, cell in _ROWS:
        lines.append(f"{label:<32}" + "".join(f"{cell(docs[n]):>{width}}" for n in names))
    lines.append("")
    if (text := headline(docs)) is not None:
        lines.append(text)
    lines.append("")
    lines += format_tails(docs)
    for n in names:
        if docs[n]["warning"]:
            lines.append(f"WARNING ({n}): {docs[n]['warning']}")
    lines.append(f"demo wall time {runtime_s:.0f} s; results in {settings.out}")
    return "\n".join(lines)


def write_plots(docs: Mapping[str, Doc], paths: Sequence[str], out: Path) -> list[Path]:
    from loadgen.plot import plot_files

    written = [_attainment_bars(docs, out / "attainment.png")]
    written += plot_files(list(paths), str(out), every_timeline=True)
    return written


def _attainment_bars(docs: Mapping[str, Doc], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(docs)
    metrics = (
        ("both SLOs", "slo_attainment"),
        ("TTFT", "ttft_attainment"),
        ("mean TBT", "tbt_attainment"),
    )
    x = np.arange(len(metrics))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(names):
        values = [(docs[name]["summary"][key] or 0.0) * 100 for _, key in metrics]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    ax.axhline(90, color="grey", linestyle="--", linewidth=1, label="90% target")
    ax.set_xticks(x, [label for label, _ in metrics])
    ax.set_ylabel("requests meeting the SLO (%)")
    ax.set_ylim(0, 118)
    ax.legend(loc="upper center", ncol=len(names) + 1, fontsize=8, frameon=False)
    first = next(iter(docs.values()))["config"]
    ax.set_title(
        f"3 emulated A100s, {first['rate_rps']:g} req/s, {first['num_requests']} requests, "
        f"SLO TTFT {first['slo_ttft_s']:g} s / mean TBT {first['slo_tbt_s']:g} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
