"""Plots from hand-made results files, including proxy/simulator events on requests."""

from __future__ import annotations

from pathlib import Path

from loadgen.metrics import Outcome, RequestRecord, summarize
from loadgen.plot import plot_files
from loadgen.results import load_results, record_to_dict, write_json


def records(n: int, ttft: float, events: bool) -> list[RequestRecord]:
    out = []
    for i in range(n):
        r = RequestRecord(i, i * 0.1, 100, 5, 0.5, 0.05, outcome=Outcome.COMPLETED)
        first = r.arrival_s + ttft * (1 + i % 3)
        for k in range(5):
            r.add_chunk(first + 0.02 * k, 1)
        r.end_s = first + 0.1
        if events and i % 4 == 0:
            r.events = [
                {"t": first - 0.05, "kind": "offload"},
                {"t": first + 0.03, "kind": "migration"},
            ]
        out.append(r)
    return out


def test_run_file_gives_cdfs_and_a_timeline_with_events(tmp_path: Path) -> None:
    recs = records(40, 0.2, events=True)
    run = {
        "kind": "run",
        "config": {"label": "ascendra"},
        "summary": summarize(recs),
        "requests": [record_to_dict(r) for r in recs],
    }
    write_json(tmp_path / "run.json", run)
    assert load_results(tmp_path / "run.json")["requests"][0]["events"][0]["kind"] == "offload"
    written = plot_files([str(tmp_path / "run.json")], str(tmp_path / "png"))
    assert sorted(p.name for p in written) == ["tbt_cdf.png", "timeline.png", "ttft_cdf.png"]
    assert all(p.stat().st_size > 10_000 for p in written)


def test_sweeps_give_one_attainment_line_each(tmp_path: Path) -> None:
    for name, cap in (("vllm", 12.0), ("ascendra", 18.5)):
        points = [
            {"rate": r, "summary": {"slo_attainment": a}, "requests": []}
            for r, a in ((10, 0.99), (15, 0.93 if cap > 15 else 0.8), (20, 0.7))
        ]
        doc = {
            "kind": "sweep",
            "config": {"label": name},
            "capacity_rps_at_90": cap,
            "points": points,
        }
        write_json(tmp_path / f"{name}.json", doc)
    files = [str(tmp_path / "vllm.json"), str(tmp_path / "ascendra.json")]
    written = plot_files(files, str(tmp_path / "png"))
    assert [p.name for p in written] == ["attainment_vs_rate.png"]  # no requests: no CDFs
