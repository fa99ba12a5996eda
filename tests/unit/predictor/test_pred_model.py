"""Training, the model file, loading, fallback and hot reload."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import orjson
import pytest
from predictor_builders import analytical, random_batch, synthetic_rows

from ascendra_proxy.predictor.features import FEATURE_NAMES
from ascendra_proxy.predictor.model import (
    LearnedPredictor,
    ModelFileError,
    load_predictor,
    read_model,
)
from ascendra_proxy.predictor.train import train

SMALL = {"num_boost_round": 30}


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return train(synthetic_rows(3000, 1), seed=5, holdout=0.25, params=SMALL).model_bytes


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_trained_model_beats_a_constant_and_the_analytical_model() -> None:
    rows = synthetic_rows(4000, 2)
    res = train(rows, seed=1, holdout=0.25, params=SMALL)
    rep = res.report
    fit, test = rows.split(0.25, 1)
    first = ~test.batch.resident
    const = np.quantile(fit.ttft_s[~fit.batch.resident], 0.9)  # best constant 0.9-quantile
    const_p90 = float(np.percentile(np.abs(test.ttft_s[first] - const), 90))
    learned = rep["learned"]["ttft_p90_abs_err_over_slo"]  # SLO is 1 s in these rows
    assert learned < 0.5 * const_p90
    assert learned < rep["analytical"]["ttft_p90_abs_err_over_slo"]
    assert 0.75 <= rep["learned"]["ttft_calibration"] <= 1.0  # a 0.9 quantile, roughly
    assert rep["rows"]["train"] + rep["rows"]["holdout"] == len(rows)
    assert set(rep["importance"]) == {"ttft", "next_token"}
    assert "work_tokens" in rep["importance"]["ttft"] or "an_ttft_s" in rep["importance"]["ttft"]


def test_same_data_and_seed_give_a_byte_identical_file(model_bytes: bytes) -> None:
    again = train(synthetic_rows(3000, 1), seed=5, holdout=0.25, params=SMALL).model_bytes
    assert again == model_bytes
    other = train(synthetic_rows(3000, 1), seed=6, holdout=0.25, params=SMALL).model_bytes
    assert other != model_bytes  # the seed matters (the held-out split at least)


def test_learned_predictor_answers_the_seam(tmp_path: Path, model_bytes: bytes) -> None:
    p = LearnedPredictor.open(write(tmp_path / "m.json", model_bytes), analytical())
    assert p.source == "learned"
    batch = random_batch(50, 9)
    out = p.predict(batch)
    assert out.source == "learned"
    assert out.ttft_s.shape == out.next_k_s.shape == (50,)
    assert np.all(out.ttft_s >= 0) and np.all(np.isfinite(out.next_k_s))
    assert not np.allclose(out.ttft_s, analytical().predict(batch).ttft_s)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"\x00garbage" + d[:100], "not valid JSON"),
        (lambda d: orjson.dumps({"format": "something-else"}), "not a ascendra-slack-predictor"),
        (lambda d: _edit(d, schema_version=0), "feature schema version 0"),
        (lambda d: _edit(d, feature_names=["x", *FEATURE_NAMES[1:]]), "column 0 \\('x'"),
        (lambda d: _edit(d, quantile=1.5), "quantile 1.5"),
        (lambda d: _edit_model(d, "tree\nnot a model"), "target 'ttft': corrupt LightGBM"),
    ],
)
def test_corrupt_or_mismatched_files_fail_clearly(
    tmp_path: Path, model_bytes: bytes, mutate: object, message: str
) -> None:
    path = write(tmp_path / "m.json", mutate(model_bytes))  # type: ignore[operator]
    with pytest.raises(ModelFileError, match=message) as err:
        read_model(path)
    assert str(path) in str(err.value)


def test_factory_falls_back_to_the_analytical_model(
    tmp_path: Path, model_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    an = analytical()
    assert load_predictor(None, an) is an
    bad = write(tmp_path / "m.json", _edit(model_bytes, schema_version=99))
    with caplog.at_level(logging.WARNING):
        p = load_predictor(bad, an)
    assert p.source == "analytical"
    assert "schema version 99" in caplog.text and "analytical" in caplog.text
    batch = random_batch(20, 3)
    assert np.array_equal(p.predict(batch).ttft_s, an.predict(batch).ttft_s)
    assert load_predictor(bad, an, watch=False) is an
    assert load_predictor(tmp_path / "missing.json", an).source == "analytical"


def test_hot_reload_picks_up_a_new_file_and_ignores_a_bad_one(
    tmp_path: Path, model_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.json"
    p = load_predictor(path, analytical())  # no file yet: analytical until one appears
    assert isinstance(p, LearnedPredictor) and source(p) == "analytical"
    assert not p.maybe_reload()
    write(path, model_bytes)
    assert p.maybe_reload() and source(p) == "learned"
    assert not p.maybe_reload()  # unchanged file: a stat, no read
    first = p.model
    newer = train(synthetic_rows(3000, 1), quantile=0.5, seed=5, params=SMALL).model_bytes
    write(path, newer)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert p.maybe_reload()
    assert p.model is not first and p.model is not None and p.model.quantile == 0.5
    with caplog.at_level(logging.WARNING):
        write(path, b"{broken")
        os.utime(path, ns=(2, 2))
        assert not p.maybe_reload()
    assert p.source == "learned" and p.model.quantile == 0.5  # the old model keeps answering
    assert "keeping the current one" in caplog.text
    assert not p.maybe_reload()  # the bad file is not re-read every tick


def test_read_changed_reads_once_per_change_and_installs_nothing(
    tmp_path: Path, model_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.json"
    p = LearnedPredictor(path, analytical(), None)
    assert p.read_changed() is None  # no file
    write(path, model_bytes)
    assert p.needs_reload()
    model = p.read_changed()
    assert model is not None and source(p) == "analytical" and p.model is None
    assert not p.needs_reload() and p.read_changed() is None  # the change was consumed
    p.install(model)
    assert source(p) == "learned" and p.model is model
    write(path, b"{broken")
    os.utime(path, ns=(3, 3))
    with caplog.at_level(logging.WARNING):
        assert p.read_changed() is None
    assert "keeping the current one" in caplog.text and p.model is model


def source(p: LearnedPredictor) -> str:
    return p.source  # (a call: mypy would narrow the property across reloads)


def _edit(data: bytes, **changes: object) -> bytes:
    doc = orjson.loads(data)
    doc.update(changes)
    return orjson.dumps(doc)


def _edit_model(data: bytes, text: str) -> bytes:
    doc = orjson.loads(data)
    doc["targets"]["ttft"]["model"] = text
    return orjson.dumps(doc)
