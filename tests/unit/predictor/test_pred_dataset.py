"""Training rows: the recorder's labels, censoring, rate limits, the rolling file, the join."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from predictor_builders import backend

from ascendra_proxy.core.predict import PredictionQuery
from ascendra_proxy.predictor.dataset import RollingJsonl, TrainingRecorder
from ascendra_proxy.predictor.rows import RowsError, read_rows

WAITING = PredictionQuery(0, 100, 0, 0.0, 0, 0, False)
STREAMING = PredictionQuery(0, 100, 5, 0.0, 0, 0, True)


def lines(rec: TrainingRecorder) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in rec.take_lines()]


def labels(rec: TrainingRecorder) -> list[dict[str, object]]:
    return [x for x in lines(rec) if x["k"] == "l"]


def test_ttft_and_next_k_labels() -> None:
    rec = TrainingRecorder("t", horizon_tokens=4)
    rid = rec.observe("r1", 1.0, WAITING, backend("lp-0"), (1.0, 0.1))
    assert rid == "t:1"
    rec.label_tokens("r1", 1.3, 1, "lp-0")  # first token, 0.3 s after the observation
    rec.label_tokens("r1", 1.35, 2, "lp-0")
    rec.label_tokens("r1", 1.4, 1, "lp-0")  # 3 after the first
    assert rec.rows_labelled == 0
    rec.label_tokens("r1", 1.5, 1, "lp-0")  # 4 after the first: next_k = 1.5 - 1.3
    out = lines(rec)
    assert [x["k"] for x in out] == ["q", "l"]
    q, lab = out
    assert q["id"] == lab["id"] == "t:1"
    assert q["rid"] == "r1" and q["slo"] == [1.0, 0.1] and q["h"] == 4
    assert q["b"]["name"] == "lp-0"  # type: ignore[index]
    assert lab["ttft"] == pytest.approx(0.3)
    assert lab["next_k"] == pytest.approx(0.2)


def test_a_chunk_of_several_tokens_counts_each() -> None:
    rec = TrainingRecorder("t", horizon_tokens=2)
    rec.observe("r1", 0.0, WAITING, backend())
    rec.label_tokens("r1", 0.5, 3)  # the first token and two more at once
    (lab,) = labels(rec)
    assert lab["ttft"] == pytest.approx(0.5) and lab["next_k"] == 0.0


def test_tokens_from_another_backend_censor_the_row() -> None:
    rec = TrainingRecorder("t", horizon_tokens=2)
    rec.observe("r1", 0.0, WAITING, backend("lp-0"))
    rec.label_tokens("r1", 0.5, 1, "hp-0")  # offloaded: hp-0's first token is no lp-0 label
    rec.finish("r1")
    assert labels(rec) == [] and rec.rows_censored == 1


def test_discard_and_finish() -> None:
    rec = TrainingRecorder("t", horizon_tokens=8)
    rec.observe("moved", 0.0, WAITING, backend())
    rec.discard("moved")
    rec.observe("short", 0.0, WAITING, backend())
    rec.label_tokens("short", 0.2, 1)
    rec.finish("short")  # ended before 8 more tokens: ttft known, next_k null
    rec.observe("never", 0.0, WAITING, backend())
    rec.finish("never")  # no token at all: nothing to learn
    (lab,) = labels(rec)
    assert lab["ttft"] == pytest.approx(0.2) and lab["next_k"] is None
    assert rec.rows_censored == 2 and rec.open_requests == 0


def test_rate_limit_per_request_and_phase() -> None:
    rec = TrainingRecorder("t", min_interval_s=0.1, resident_interval_s=0.5)
    assert rec.observe("r1", 0.0, WAITING, backend()) is not None
    assert rec.observe("r1", 0.05, WAITING, backend()) is None
    assert rec.observe("r1", 0.1, WAITING, backend()) is not None
    assert rec.observe("r1", 0.12, STREAMING, backend()) is not None  # phase changed
    assert rec.observe("r1", 0.5, STREAMING, backend()) is None
    assert rec.observe("r1", 0.62, STREAMING, backend()) is not None
    assert rec.rows_observed == 4


def test_sink_is_called_in_batches() -> None:
    got: list[list[bytes]] = []
    rec = TrainingRecorder("t", min_interval_s=0.0, sink=got.append, flush_lines=3)
    for i in range(7):
        rec.observe(f"r{i}", 0.0, WAITING, backend())
    assert [len(b) for b in got] == [3, 3]
    rec.flush()
    assert [len(b) for b in got] == [3, 3, 1]


def test_rolling_file_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    w = RollingJsonl(path, max_bytes=100, keep=2)
    for i in range(10):
        w.write_lines([orjson.dumps({"i": i, "pad": "x" * 60})])
    files = w.files()
    assert {p.name for p in files} <= {"rows.jsonl", "rows.jsonl.1", "rows.jsonl.2"}
    assert not (tmp_path / "rows.jsonl.3").exists()
    kept = sorted(orjson.loads(x)["i"] for p in files for x in p.read_bytes().splitlines())
    assert kept == list(range(10 - len(kept), 10))  # the newest survive, oldest dropped
    assert len(kept) < 10


def test_join_across_rotated_files_and_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rec = TrainingRecorder("run", horizon_tokens=2)
    x = {"on_backend_s": 0.3, "head_age_s": 0.5}
    rec.observe("r1", 0.0, WAITING, backend("lp-0"), (2.0, 0.2), extra=x)
    rec.observe("r2", 0.0, WAITING, backend("lp-0"))
    (tmp_path / "rows.jsonl.1").write_bytes(b"\n".join(rec.take_lines()) + b"\n")
    rec.label_tokens("r1", 0.4, 3)  # r1 labelled; r2 never
    path.write_bytes(b"\n".join(rec.take_lines()) + b'\n{"k": "q", "id": "cut sh')
    rows = read_rows([path])
    assert len(rows) == 1
    assert rows.ttft_s.tolist() == pytest.approx([0.4])
    assert rows.next_token_s.tolist() == [0.0]  # 2 more tokens in the same chunk
    assert rows.slo_ttft_s.tolist() == [2.0] and rows.groups == ("run|r1",)
    assert rows.batch.backends[0].name == "lp-0"
    assert rows.extras["on_backend_s"].tolist() == [0.3]
    assert rows.extras["head_age_s"].tolist() == [0.5]
    assert math.isnan(rows.extras["last_first_token_s"][0])  # not recorded: NaN


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"k": "q", "id": "a:1"}\nnot json\n{"k": "l", "id": "a:1"}\n')
    with pytest.raises(RowsError, match=r"bad.jsonl:2"):
        read_rows([p])
    with pytest.raises(RowsError, match="no such file"):
        read_rows([tmp_path / "missing.jsonl"])


def test_split_keeps_requests_whole(tmp_path: Path) -> None:
    rec = TrainingRecorder("run", horizon_tokens=1, min_interval_s=0.0)
    for i in range(40):
        for t in (0.0, 0.2, 0.4):
            rec.observe(f"r{i}", t, WAITING, backend())
        rec.label_tokens(f"r{i}", 1.0, 2)
    f = tmp_path / "rows.jsonl"
    f.write_bytes(b"\n".join(rec.take_lines()) + b"\n")
    rows = read_rows([f])
    assert len(rows) == 120
    train, test = rows.split(0.25, seed=3)
    assert len(train) + len(test) == 120 and 0 < len(test) < 120
    assert not set(train.groups) & set(test.groups)
    assert np.all(~np.isnan(rows.ttft_s)) and not math.isnan(float(rows.next_token_s[0]))
