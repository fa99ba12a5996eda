"""The learned-vs-analytical predictor benchmark: one tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import predictor_suite  # noqa: E402


def test_trains_on_one_window_and_compares_on_another(tmp_path: Path) -> None:
    argv = ["--workloads", "conv", "--rates", "conv=20,40", "--requests-scale", "0.02"]
    assert predictor_suite.main([*argv, "--jobs", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "predictor_suite.json").read_text())
    assert doc["training"]["conv"]["report"]["rows"]["train"] > 0
    assert (tmp_path / "model-conv.json").is_file()
    # Same rates for both predictors, and the learned runs really used the model.
    seen = {(p["predictor"], p["source"], p["rate"]) for p in doc["points"]}
    assert seen == {
        ("analytical", "analytical", 20.0),
        ("analytical", "analytical", 40.0),
        ("learned", "learned", 20.0),
        ("learned", "learned", 40.0),
    }
    assert [c["predictor"] for c in doc["capacity"]] == ["analytical", "learned"]


def test_training_and_evaluation_windows_must_differ(tmp_path: Path) -> None:
    argv = ["--train-window", "1", "--eval-window", "1", "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="must differ"):
        predictor_suite.main(argv)
