"""The capacity suite's pieces: the capacity search, trace windows, the table, one tiny run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import capacity  # noqa: E402
import capacity_suite  # noqa: E402
from suite_report import format_table, table_rows  # noqa: E402

from ascendra_proxy.sim.search import CapacitySearch  # noqa: E402


def attainment_of(rate: float) -> float:
    """A made-up policy: 100% up to 10 req/s, then 5 points less per req/s."""
    return 1.0 if rate <= 10 else max(0.0, 1.0 - 0.05 * (rate - 10))


@pytest.mark.parametrize("start", [1.0, 12.0, 40.0])
def test_search_brackets_and_converges_from_any_start(start: float) -> None:
    s = CapacitySearch(start=start, max_points=12)
    while not s.done:
        r = s.next_rate()
        s.add(r, attainment_of(r))
    cap = s.capacity()
    assert cap.status == "interpolated"
    assert cap.rps == pytest.approx(12.0, rel=0.03)  # 90% at 12 req/s


def test_search_stops_at_max_points() -> None:
    s = CapacitySearch(start=1.0, max_points=3)
    for _ in range(3):
        assert not s.done
        s.add(s.next_rate(), 1.0)  # never fails: grows 1.6x each time
    assert s.done
    assert [r for r, _ in s.points] == pytest.approx([1.0, 1.6, 2.56])
    assert s.capacity().status == "above_range"


def test_windows_are_distinct_trace_rows_retimed() -> None:
    a = capacity_suite.window_items("conv", 50, 0, 10.0)
    b = capacity_suite.window_items("conv", 50, 1, 10.0)
    whole = capacity_suite.window_items("conv", 100, 0, None)
    assert [x.prompt_tokens for x in b] == [x.prompt_tokens for x in whole[50:]]
    assert [x.prompt_tokens for x in a] != [x.prompt_tokens for x in b]
    for items in (a, b):
        assert items[0].arrival_s == 0.0 and [x.index for x in items] == list(range(50))
        assert (len(items) - 1) / items[-1].arrival_s == pytest.approx(10.0)


def seeds(*caps: float | str) -> dict[str, object]:
    """A policy's cell from window capacities; ``"<x"`` is a window never at 90%."""
    out = []
    for c in caps:
        if isinstance(c, str):
            out.append({"capacity_rps_at_90": None, "status": "below_range", "bound": float(c[1:])})
        else:
            out.append({"capacity_rps_at_90": c, "status": "interpolated", "bound": None})
    return capacity_suite.median_capacity(out)


def test_median_window_and_bounds() -> None:
    assert seeds(3.0, 1.0, 2.0)["capacity_rps_at_90"] == 2.0
    below = seeds("<0.2", 0.5, "<0.3")  # two of three windows never reached 90%
    assert below["capacity_rps_at_90"] is None and below["capacity_text"] == "<0.30"


def test_table_names_the_best_baseline_and_ratios() -> None:
    caps = {
        "w": {
            "round_robin": seeds(10.0, 9.0, 11.0),
            "least_loaded": seeds(12.0, 12.0, 13.0),
            "prefix_aware": seeds("<1", "<1", 30.0),
            "ascendra": seeds(15.0, 14.0, 16.0),
        }
    }
    overload = {"ascendra": {"1.25x": {"goodput_rps": 11.0}}}
    rows = table_rows(["w"], list(caps["w"]), caps, {"w": 20.0}, overload, "w")
    by = {r["policy"]: r for r in rows}
    assert {r["best_baseline"] for r in rows} == {"least_loaded"}
    assert by["ascendra"]["x_round_robin"] == pytest.approx(1.5)
    assert by["ascendra"]["x_best_baseline"] == pytest.approx(1.25)
    assert by["ascendra"]["pct_of_ceiling"] == pytest.approx(75.0)
    assert by["prefix_aware"]["capacity_text"] == "<1.00"
    assert by["prefix_aware"]["x_round_robin_text"] == "<0.10"
    text = format_table(rows, (1.25,))
    assert "least_loaded (best baseline)" in text and "11.00" in text
    assert format_table(rows, (1.25,), markdown=True).count("\n") == len(rows) + 1


def test_tiny_suite_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--suite",
        "--workloads",
        "conv,three-tier",
        "--policies",
        "round_robin,prefix_aware",
        "--seeds",
        "1",
        "--num-requests",
        "40",
        "--points",
        "2",
        "--jobs",
        "1",
        "--no-plots",
        "--out",
        str(tmp_path),
    ]
    assert capacity.main(argv) == 0
    doc = json.loads((tmp_path / "suite.json").read_text())
    assert doc["ceilings"]["conv"]["ceiling_rps"] > 0
    assert doc["ceilings"]["three-tier"] == doc["ceilings"]["conv"]  # the same rows
    per_class = doc["capacities"]["three-tier"]["round_robin"]["seeds"][0]["points"][0]
    assert set(per_class["attainment_by_class"]) == {"interactive", "standard", "batch"}
    rows = {r["policy"]: r for r in doc["table"] if r["workload"] == "conv"}
    assert set(rows) == {"round_robin", "prefix_aware"}
    for p in rows:
        assert len(doc["capacities"]["conv"][p]["seeds"][0]["points"]) == 2
    assert "conv" in capsys.readouterr().out
    assert (tmp_path / "table.md").read_text().startswith("| workload")
    again = tmp_path / "again"
    argv = ["--suite", "--from-json", str(tmp_path / "suite.json"), "--out", str(again)]
    assert capacity.main([*argv, "--no-plots"]) == 0
    assert (again / "table.md").read_text() == (tmp_path / "table.md").read_text()
