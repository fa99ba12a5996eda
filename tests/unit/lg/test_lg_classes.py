"""SLO classes as workload data: named mixes, per-class attainment, catalog trace workloads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from mooncake_fixture import make_rows, write_trace

from loadgen.arrivals import ArrivalSpec
from loadgen.catalog import TRACES_ENV, load_trace_workloads, source_note, trace_workload_spec
from loadgen.cli import add_workload_args, workload_spec
from loadgen.metrics import Outcome, RequestRecord, summarize
from loadgen.report import format_summary
from loadgen.results import record_from_dict, record_to_dict
from loadgen.workloads import SloClass, WorkloadSpec, build_workload, parse_slo_mix


def test_three_tier_is_a_named_mix() -> None:
    mix = parse_slo_mix("three-tier")
    assert [(c.name, c.ttft_s, c.tbt_s) for c in mix] == [
        ("interactive", 1.0, 0.05),
        ("standard", 2.0, 0.15),
        ("batch", 30.0, 0.5),
    ]
    assert [c.share for c in mix] == pytest.approx([1 / 3] * 3)


def test_mix_entries_may_be_named() -> None:
    mix = parse_slo_mix("fast=1:0.1:3, 2:0.3:1")
    assert [(c.label, c.share) for c in mix] == [("fast", 0.75), ("2s/0.3s", 0.25)]
    with pytest.raises(ValueError, match="one name"):
        parse_slo_mix("a=1:0.1:1,a=2:0.2:1")
    with pytest.raises(ValueError, match="named mix"):
        parse_slo_mix("no-such-mix")


def test_items_carry_their_class_by_share() -> None:
    spec = WorkloadSpec(
        3000,
        ArrivalSpec("poisson", 10.0),
        parse_slo_mix("three-tier"),
        workload="azure-conv",
        seed=1,
    )
    items = build_workload(spec)
    by_name: dict[str, set[tuple[float, float]]] = {}
    for it in items:
        by_name.setdefault(it.slo_class, set()).add((it.slo_ttft_s, it.slo_tbt_s))
    assert by_name == {
        "interactive": {(1.0, 0.05)},
        "standard": {(2.0, 0.15)},
        "batch": {(30.0, 0.5)},
    }
    counts = [sum(it.slo_class == n for it in items) for n in by_name]
    assert all(900 < c < 1100 for c in counts)


def rec(i: int, cls: str, slo: tuple[float, float], ttft: float) -> RequestRecord:
    r = RequestRecord(i, 0.0, 10, 2, slo[0], slo[1], slo_class=cls)
    r.add_chunk(ttft, 1)
    r.add_chunk(ttft + 0.04, 1)  # mean TBT 40 ms
    r.end_s = ttft + 0.05
    r.outcome = Outcome.COMPLETED
    return r


def test_attainment_per_class_and_overall() -> None:
    records = [
        rec(0, "interactive", (1.0, 0.05), 0.5),  # met
        rec(1, "interactive", (1.0, 0.05), 1.5),  # TTFT miss
        rec(2, "batch", (30.0, 0.5), 20.0),  # met
        rec(3, "scaled", (2.0, 0.15), 1.9),  # met: per-request TTFT 2.0
        rec(4, "scaled", (8.0, 0.15), 9.0),  # TTFT miss: per-request TTFT 8.0
    ]
    failed = rec(5, "batch", (30.0, 0.5), 1.0)
    failed.outcome = Outcome.FAILED  # a failed request is a miss of its class
    s = summarize([*records, failed])
    assert s["slo_attainment"] == pytest.approx(3 / 6)
    got = {c["name"]: c for c in s["attainment_by_class"]}
    assert got["interactive"]["slo_attainment"] == 0.5
    assert got["interactive"]["ttft_attainment"] == 0.5
    assert (got["batch"]["requests"], got["batch"]["slo_attainment"]) == (2, 0.5)
    assert got["scaled"]["slo_ttft_s"] is None  # varies per request
    assert (got["scaled"]["slo_ttft_s_min"], got["scaled"]["slo_ttft_s_max"]) == (2.0, 8.0)
    text = format_summary(s)
    assert "class interactive (TTFT 1 s / TBT 0.05 s): 50.0% of 2" in text
    assert "class scaled (TTFT 2-8 s / TBT 0.15 s): 50.0% of 2" in text


def test_class_survives_the_results_file() -> None:
    r = rec(0, "standard", (2.0, 0.15), 0.5)
    assert record_from_dict(record_to_dict(r)).slo_class == "standard"


@pytest.fixture
def traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_trace(tmp_path / "mooncake" / "conversation_trace.jsonl", make_rows(30))
    monkeypatch.setenv(TRACES_ENV, str(tmp_path))
    return tmp_path


def test_catalog_names_the_trace_workloads(traces: Path) -> None:
    known = load_trace_workloads()
    assert {"mooncake-conversation", "mooncake-synthetic", "three-tier"} <= set(known)
    assert known["three-tier"].slo_classes == parse_slo_mix("three-tier")
    spec = trace_workload_spec("mooncake-conversation", 30, ArrivalSpec("trace", 2.0), seed=0)
    assert spec.trace == str(traces / "mooncake" / "conversation_trace.jsonl")
    assert spec.context_tokens == 131072 and spec.slo_rule is not None
    items = build_workload(spec)
    assert {it.slo_class for it in items} == {"mooncake-conversation"}
    assert all(it.slo_ttft_s >= 1.0 and it.slo_tbt_s == 0.15 for it in items)
    assert all(it.blocks for it in items)
    assert source_note(spec.trace, "mooncake-conversation") is not None
    assert "Azure" in (source_note(None, "three-tier") or "")


def cli_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_workload_args(p)
    return p.parse_args(list(argv))


def test_cli_takes_catalog_workloads_and_overrides(traces: Path) -> None:
    spec = workload_spec(cli_args("--workload", "mooncake-conversation"), None)
    assert spec.num_requests == 30 and spec.arrivals.kind == "trace"
    assert spec.slo_rule is not None
    mixed = workload_spec(
        cli_args("--workload", "mooncake-conversation", "--slo-mix", "three-tier",
                 "--block-tokens", "16", "--num-requests", "5"),
        None,
    )  # fmt: skip
    assert mixed.slo_rule is None and len(mixed.slo_classes) == 3
    assert (mixed.block_tokens, mixed.num_requests) == (16, 5)
    plain = workload_spec(
        cli_args("--trace", str(traces / "mooncake" / "conversation_trace.jsonl"),
                 "--slo-ttft", "2", "--slo-tbt", "0.2"),
        None,
    )  # fmt: skip
    assert plain.slo_classes == (SloClass(2.0, 0.2),) and build_workload(plain)[0].blocks
    with pytest.raises(ValueError, match="takes its lengths"):
        workload_spec(cli_args("--workload", "mooncake-conversation", "--prompt-len", "9"), None)


def test_class_header_mode_sends_the_name_only() -> None:
    from loadgen.client import slo_headers

    (item,) = build_workload(
        WorkloadSpec(1, ArrivalSpec("constant", 1.0), parse_slo_mix("three-tier")[2:],
                     workload="azure-conv")
    )  # fmt: skip
    assert slo_headers(item, "class") == {"x-slo-class": "batch"}
    assert slo_headers(item) == {"x-slo-ttft-ms": "30000", "x-slo-tpot-ms": "500"}


def test_cli_refuses_class_headers_for_per_request_slos_and_chat_for_blocks(
    traces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loadgen.cli import main

    base = ["run", "--url", "http://127.0.0.1:9", "--out", str(traces / "o.json")]
    base += ["--workload", "mooncake-conversation", "--num-requests", "3"]
    assert main([*base, "--slo-headers", "class"]) == 2
    assert "per-request SLOs" in capsys.readouterr().err
    assert main([*base, "--endpoint", "chat"]) == 2
    assert "token-id prompts" in capsys.readouterr().err


def test_class_rows_in_tables_and_a_plot_per_class(tmp_path: Path) -> None:
    from ascendra_proxy.sim.table import comparison_document, format_comparison
    from loadgen.plot import plot_files
    from loadgen.report import format_sweep
    from loadgen.results import write_json

    records = [rec(0, "interactive", (1.0, 0.05), 0.5), rec(1, "batch", (30.0, 0.5), 40.0)]
    point = {"rate": 2.0, "summary": summarize(records), "requests": []}
    sweep = {"kind": "sweep", "config": {"label": "rr"}, "points": [point]}
    table = format_comparison([("rr", sweep)])
    assert "  class interactive  100.0%" in table and "  class batch" in table
    classes = comparison_document([("rr", sweep)])["policies"][0]["points"][0]
    assert classes["attainment_by_class"] == {"interactive": 1.0, "batch": 0.0}
    assert "100.0% interactive" in format_sweep([point], {})
    write_json(tmp_path / "s.json", sweep)
    written = plot_files([str(tmp_path / "s.json")], str(tmp_path / "png"))
    assert "attainment_by_class.png" in {p.name for p in written}


def test_refitting_keeps_the_hand_written_catalog(tmp_path: Path) -> None:
    from loadgen.fit_workloads import HAND_WRITTEN, _hand_written

    shipped = Path(__file__).resolve().parents[3] / "loadgen" / "data" / "workloads.yaml"
    tail = _hand_written(shipped)
    assert tail.startswith(HAND_WRITTEN) and "three-tier:" in tail and "trace_workloads:" in tail
    assert _hand_written(tmp_path / "absent.yaml") == ""


def test_simulator_breakdown_groups_misses_by_class() -> None:
    from ascendra_proxy.sim.analysis import breakdown, format_breakdown
    from loadgen.results import record_to_dict

    records = [rec(0, "interactive", (1.0, 0.05), 1.5), rec(1, "batch", (30.0, 0.5), 2.0)]
    doc = {"requests": [record_to_dict(r) for r in records]}
    b = breakdown(doc)
    assert b["class"]["interactive"]["misses"] == {"ttft": 1}
    assert b["class"]["batch"]["met"] == 1
    assert "class batch" in format_breakdown("rr", b)
    assert "class" not in breakdown({"requests": doc["requests"][:1]})  # one class: no axis
