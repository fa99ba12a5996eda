"""Operations around the model: metrics, the train command, retraining, simulator rows."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from predictor_builders import analytical
from prometheus_client import CollectorRegistry, generate_latest

from ascendra_proxy.cli import main
from ascendra_proxy.predictor.metrics import PredictorMetrics
from ascendra_proxy.predictor.model import LearnedPredictor, load_predictor
from ascendra_proxy.predictor.retrain import Retrainer, retrain_job
from ascendra_proxy.predictor.rows import read_rows


def test_source_gauge_and_error_histograms() -> None:
    reg = CollectorRegistry()
    current = {"s": "analytical"}
    m = PredictorMetrics(reg, lambda: current["s"])
    m.observe("ttft", predicted_s=0.5, actual_s=0.4, slo_s=1.0)
    m.observe("ttft", predicted_s=0.2, actual_s=0.6, slo_s=1.0)
    assert reg.get_sample_value("ascendra_predictor_source", {"source": "analytical"}) == 1.0
    assert reg.get_sample_value("ascendra_predictor_source", {"source": "learned"}) == 0.0
    current["s"] = "learned"
    assert reg.get_sample_value("ascendra_predictor_source", {"source": "learned"}) == 1.0

    def error_bucket(le: str) -> float | None:
        labels = {"target": "ttft", "le": le}
        return reg.get_sample_value("ascendra_predictor_error_seconds_bucket", labels)

    assert error_bucket("-0.5") == 0 and error_bucket("-0.25") == 1  # -0.4: optimistic
    assert error_bucket("0.1") == 2 and error_bucket("+Inf") == 2  # +0.1: conservative
    under = reg.get_sample_value(
        "ascendra_predictor_abs_error_over_slo_bucket", {"target": "ttft", "le": "0.1"}
    )
    assert under == 1  # 0.1 of the SLO; the other is 0.4
    assert b"ascendra_predictor_source" in generate_latest(reg)


@pytest.fixture(scope="module")
def sim_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rows from a short simulation (round robin: nothing moves, every row is labelled)."""
    from ascendra_proxy.predictor.simtap import record_to_file
    from ascendra_proxy.sim.setup import load_sim_config, with_policy
    from ascendra_proxy.sim.simulator import Simulator
    from loadgen.arrivals import ArrivalSpec
    from loadgen.workloads import SloClass, WorkloadSpec, build_workload

    root = Path(__file__).resolve().parents[3]
    cfg = with_policy(load_sim_config(root / "configs" / "paper-3xa100.yaml"), "round_robin")
    spec = WorkloadSpec(
        num_requests=150,
        arrivals=ArrivalSpec("poisson", 12.0),
        slo_classes=(SloClass(1.0, 0.15),),
        workload="azure-conv",
        seed=3,
    )
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    sim = Simulator(cfg, build_workload(spec), seed=3)
    rec = record_to_file(sim, path, "sim", horizon_tokens=8)
    result = sim.run()
    rec.flush()
    first_token = {f.id: f.state.first_token_at for f in result.flights}
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    obs = {x["id"]: x for x in lines if x["k"] == "q"}
    checked = 0
    for lab in (x for x in lines if x["k"] == "l"):
        q = obs[lab["id"]]
        if not q["q"][5]:  # a first-token row: observation time + label = first token time
            assert q["t"] + lab["ttft"] == pytest.approx(first_token[q["rid"]])
            checked += 1
    assert checked > 20 and rec.rows_censored == 0 and rec.open_requests == 0
    return path


def test_train_command_writes_model_and_report(
    sim_rows: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "model.json", tmp_path / "report.json"
    args = ["train", "--data", str(sim_rows), "--out", str(out), "--report", str(report)]
    assert main([*args, "--seed", "2", "--rounds", "20"]) == 0
    printed = capsys.readouterr().out
    assert "ttft_p90_abs_err_over_slo" in printed and "importance (ttft" in printed
    rep = orjson.loads(report.read_bytes())
    for side in ("learned", "analytical"):
        assert 0 <= rep[side]["ttft_p90_abs_err_over_slo"] < 10
        assert "next_k_mae_over_slo" in rep[side]
    assert load_predictor(out, analytical()).source == "learned"
    assert main(["train", "--data", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_retrain_job_and_worker_process(sim_rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    with pytest.raises(ValueError, match="need 1000000"):
        retrain_job([str(sim_rows)], str(out), 0.9, 0, 0.2, 1_000_000)
    assert not out.exists()
    pred = load_predictor(out, analytical())
    assert isinstance(pred, LearnedPredictor)
    assert not pred.model
    r = Retrainer([sim_rows], out, interval_s=60.0, min_rows=10)
    try:
        job = r.maybe_start(now=100.0)
        assert job is not None and r.maybe_start(now=101.0) is None  # one job at a time
        job.result(timeout=120)
        outcome = r.poll()
        assert outcome is not None and outcome.ok and outcome.report is not None
        assert r.maybe_start(now=130.0) is None  # the interval has not passed
        assert pred.maybe_reload() and pred.model is not None  # hot reload picks it up
    finally:
        r.close()
    assert len(read_rows([sim_rows])) > 100
