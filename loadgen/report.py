"""Plain-text tables of run and sweep summaries.

Theory of operation: pure formatting of the dicts :func:`loadgen.metrics.summarize` returns;
latencies print in milliseconds, shares in percent, missing values as ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_summary", "format_sweep", "shows_classes"]

_LATENCIES = (
    ("TTFT", "ttft"),
    ("mean TBT", "tbt_mean"),
    ("ITL (per chunk)", "itl"),
    ("TPOT (vLLM)", "tpot"),
    ("E2E", "e2e"),
    ("send lag", "send_lag"),
)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _num(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_summary(s: Mapping[str, Any], title: str = "") -> str:
    lines = [title] if title else []
    if s.get("interrupted"):
        lines.append(f"INTERRUPTED: partial results; {s.get('not_sent', 0)} requests never sent")
    lines.append(
        f"requests {s['total']}: completed {s['completed']}, failed {s['failed']}, "
        f"disconnected {s['disconnected']}, unfinished {s['unfinished']} "
        f"in {_num(s['duration_s'], 1)} s"
    )
    lines.append(
        f"SLO attainment {_pct(s['slo_attainment'])} "
        f"(TTFT {_pct(s['ttft_attainment'])}, TBT {_pct(s['tbt_attainment'])}); "
        f"goodput {_num(s['goodput_rps'])} req/s"
    )
    lines.append(
        f"throughput {_num(s['request_throughput'])} req/s, {_num(s['throughput_tok_s'], 0)} tok/s"
    )
    lines.append(f"{'latency (ms)':<16}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}")
    for label, key in _LATENCIES:
        cells = "".join(f"{_ms(s.get(f'{key}_{p}')):>10}" for p in ("mean", "p50", "p90", "p99"))
        lines.append(f"{label:<16}{cells}")
    classes = s.get("attainment_by_class") or []
    if shows_classes(classes):
        for c in classes:
            share = _pct(c["slo_attainment"])
            lines.append(f"  class {_class_title(c)}: {share} of {c['requests']}")
    return "\n".join(lines)


def shows_classes(classes: Sequence[Mapping[str, Any]]) -> bool:
    """More than one class, or one with a name of its own or a per-request TTFT."""
    if len(classes) > 1:
        return True
    return any(
        c.get("slo_ttft_s") is None
        or c.get("name", "") not in ("", f"{c['slo_ttft_s']:g}s/{c.get('slo_tbt_s', 0):g}s")
        for c in classes
    )


def _class_title(c: Mapping[str, Any]) -> str:
    """``interactive (TTFT 1 s / TBT 0.05 s)``; a per-request TTFT shows its range."""
    if c.get("slo_ttft_s") is not None:
        ttft = f"{c['slo_ttft_s']:g} s"
    else:
        ttft = f"{c.get('slo_ttft_s_min', 0):.3g}-{c.get('slo_ttft_s_max', 0):.3g} s"
    tbt = "-" if c.get("slo_tbt_s") is None else f"{c['slo_tbt_s']:g} s"
    name = c.get("name")
    numbers = f"TTFT {ttft} / TBT {tbt}"
    return f"{name} ({numbers})" if name else numbers


def format_sweep(points: Sequence[Mapping[str, Any]], capacity: Mapping[str, Any]) -> str:
    header = (
        f"{'rate':>8}{'attain':>9}{'goodput':>9}{'tok/s':>9}"
        f"{'TTFT p50':>10}{'TTFT p99':>10}{'TBT p50':>9}{'TBT p99':>9}{'failed':>8}"
    )
    lines = [header]
    for p in points:
        s = p["summary"]
        lines.append(
            f"{p['rate']:>8g}{_pct(s['slo_attainment']):>9}{_num(s['goodput_rps']):>9}"
            f"{_num(s['throughput_tok_s'], 0):>9}{_ms(s['ttft_p50']):>10}{_ms(s['ttft_p99']):>10}"
            f"{_ms(s['tbt_mean_p50']):>9}{_ms(s['tbt_mean_p99']):>9}{s['failed']:>8}"
        )
        classes = s.get("attainment_by_class") or []
        if shows_classes(classes):
            lines += [f"{'':>8}  {_pct(c['slo_attainment']):>7} {c['name']}" for c in classes]
    rps, status, bound = (
        capacity.get("capacity_rps_at_90"),
        capacity.get("capacity_status"),
        capacity.get("capacity_bound"),
    )
    if rps is not None:
        lines.append(f"capacity at 90% SLO attainment: {rps:.2f} req/s")
    elif status == "above_range":
        lines.append(f"capacity at 90% SLO attainment: above {bound:g} req/s (every point >= 90%)")
    elif status == "below_range":
        lines.append(f"capacity at 90% SLO attainment: below {bound:g} req/s (no point >= 90%)")
    return "\n".join(lines)
