"""``ascendra-proxy simulate``: loadgen-compatible files, sweeps, several policies, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sim_helpers import config_dict

from ascendra_proxy.cli import main
from loadgen.metrics import summarize
from loadgen.results import load_results


def sim_args(files: tuple[Path, Path], out: Path | str, *extra: str) -> list[str]:
    cfg, trace = files
    return ["simulate", "--config", str(cfg), "--trace", str(trace), "--out", str(out), *extra]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "sim.yaml"
    doc = config_dict({"type": "ascendra"}, sim={"network_s": 0.001})
    cfg.write_text(yaml.safe_dump(doc))
    trace = tmp_path / "trace.csv"
    rows = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    rows += [f"{i * 0.25:.3f},{200 + 37 * i % 900},{10 + 7 * i % 60}" for i in range(60)]
    trace.write_text("\n".join(rows) + "\n")
    return cfg, trace


def test_run_writes_a_loadgen_run_file(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    assert main(sim_args(files, out, "--rate", "10", "--num-requests", "40")) == 0
    doc = load_results(out)
    assert doc["kind"] == "run" and doc["config"]["policy"] == "ascendra"
    assert set(summarize([])) <= set(doc["summary"])  # loadgen's schema, plus more
    for key in ("offloads", "migrations", "offloads_by_reason", "migrations_by_reason"):
        assert key in doc["summary"]
    assert len(doc["requests"]) == 40
    assert doc["summary"]["completed"] == 40
    assert doc["summary"]["slo_attainment"] is not None
    assert all(r["route"] for r in doc["requests"])
    assert doc["requests"][0]["slo_ttft_s"] == 1.0  # the config's default SLO


def test_sweep_with_several_policies(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    extra = ["--sweep", "--rates", "4,400", "--num-requests", "40", "--slo-ttft", "0.5"]
    extra += ["--slo-tbt", "0.1", "--policy", "ascendra", "--policy", "round_robin"]
    assert main(sim_args(files, out, *extra)) == 0
    printed = capsys.readouterr().out
    assert "capacity @90%" in printed and "round_robin" in printed
    comparison = json.loads(out.read_text())
    assert [p["policy"] for p in comparison["policies"]] == ["ascendra", "round_robin"]
    for name in ("ascendra", "round_robin"):
        doc = load_results(tmp_path / f"sweep.{name}.json")
        assert doc["kind"] == "sweep" and doc["config"]["label"] == name
        assert [p["rate"] for p in doc["points"]] == [4.0, 400.0]
        assert "capacity_rps_at_90" in doc and doc["capacity_status"] != "no_points"
        assert "requests" not in doc["points"][0]  # sweeps keep summaries only by default
        low, high = (p["summary"]["slo_attainment"] for p in doc["points"])
        assert low > high


def test_set_changes_a_policy_parameter(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    args = sim_args(files, out, "--rate", "30", "--num-requests", "40")
    assert main([*args, "--set", "migration.enabled=false", "--set", "tick_ms=50"]) == 0
    assert load_results(out)["config"]["set"] == ["migration.enabled=false", "tick_ms=50"]
    assert main([*args, "--set", "migration.enabeld=false"]) == 2


def test_errors_are_reported_without_a_traceback(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.json"
    assert main(sim_args(files, out, "--sweep")) == 2
    assert "--rates" in capsys.readouterr().err
    assert main(sim_args(files, out, "--rate", "1", "--policy", "nope")) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_training_data_and_predictor_model_flags(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ascendra_proxy.predictor.rows import read_rows

    rows, model = tmp_path / "rows.jsonl", tmp_path / "model.json"
    run = ["--rate", "12", "--num-requests", "40"]
    # two policies in one run append to one file, each under its own row-id prefix
    rec = [*run, "--policy", "round_robin", "--policy", "ascendra", "--training-data", str(rows)]
    assert main(sim_args(files, tmp_path / "rec.json", *rec)) == 0
    lines = [json.loads(x) for x in rows.read_text().splitlines()]
    prefixes = {x["id"].rsplit(":", 1)[0] for x in lines}
    assert len(prefixes) == 2 and all("round_robin" in p or "ascendra" in p for p in prefixes)
    labelled = read_rows([rows])
    assert len(labelled) > 40 and {b.name for b in labelled.batch.backends} >= {"lp-0", "lp-1"}
    train = ["train", "--data", str(rows), "--out", str(model), "--rounds", "5", "--holdout", "0"]
    assert main(train) == 0
    capsys.readouterr()

    out = tmp_path / "learned.json"
    assert main(sim_args(files, out, *run, "--predictor-model", str(model))) == 0
    doc = load_results(out)
    assert doc["sim"]["predictor"] == "learned"
    assert doc["config"]["predictor_model"] == str(model)
    assert doc["summary"]["completed"] == 40
    assert main(sim_args(files, tmp_path / "an.json", *run)) == 0
    assert load_results(tmp_path / "an.json")["sim"]["predictor"] == "analytical"

    base = sim_args(files, tmp_path / "rr.json", *run, "--policy", "round_robin")
    assert main([*base, "--predictor-model", str(model)]) == 0
    assert "round_robin) has a slack predictor; --predictor-model unused" in capsys.readouterr().err
    assert load_results(tmp_path / "rr.json")["sim"]["predictor"] is None

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    assert main(sim_args(files, tmp_path / "x.json", *run, "--predictor-model", str(bad))) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not a ascendra-slack-predictor model file" in err
    assert not (tmp_path / "x.json").exists()
