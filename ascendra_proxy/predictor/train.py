"""Training and evaluating the learned slack predictor.

Theory of operation.  :func:`train` takes labelled rows (:mod:`.rows`), splits off a
held-out share by whole requests, fits one LightGBM quantile booster per target on the
rest (``ttft`` on every row, ``next_token`` on the rows whose request produced ``k`` more
tokens), and evaluates on the held-out rows, side by side with the analytical fallback
model on the same rows (:func:`evaluate`):

* ``ttft_*`` figures are over *first-token* rows (requests not yet started, the rows the
  offload rule asks about); errors are divided by each row's TTFT SLO;
* ``next_k_*`` figures are over rows with a ``next_k`` label; the error of the ``k``-token
  time is divided by ``k`` times the row's TBT SLO (the budget of those tokens);
* ``*_calibration`` is the share of actual values at or under the prediction (close to the
  quantile for a calibrated model).

The ``ttft`` booster learns from first-token rows only (a streaming request's next token
comes within one step: the model answers it with the per-token prediction), and every
booster also learns from a copy of its rows without dispatch times (see
:mod:`.features`), so it still answers well for a policy that does not pass them; the
report gives both (``learned``, ``learned_without_dispatch_times``).  Rows are weighted so
that every request counts the same (a request observed every 100 ms while it waits gives
many rows, and under overload long waits would otherwise dominate).

Training is deterministic: LightGBM runs with ``deterministic``, one thread, a fixed seed
and no bagging, and the file is written with sorted keys and no timings, so the same rows
and seed give a byte-identical model file.  The boosters are small on purpose (see
:data:`DEFAULT_PARAMS`): one tick predicts for every in-flight request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import orjson

from ascendra_proxy.core.predict import AnalyticalPredictor, FloatArray, Prediction, StepTimeModel
from ascendra_proxy.predictor.features import (
    DISPATCH_COLUMNS,
    FEATURE_NAMES,
    SCHEMA_VERSION,
    FeatureBuilder,
)
from ascendra_proxy.predictor.model import FILE_FORMAT, FILE_VERSION, LOG_OFFSET_S, parse_model
from ascendra_proxy.predictor.rows import LabelledRows

__all__ = ["DEFAULT_PARAMS", "TrainResult", "analytical_for", "evaluate", "train"]

DEFAULT_PARAMS: dict[str, Any] = {
    "num_boost_round": 30,  # ttft trees
    "num_leaves": 31,
    "max_depth": 5,  # bounds the evaluation cost per tree
    "next_boost_round": 20,  # next_token trees
    "next_num_leaves": 15,
    "next_max_depth": 4,
    "learning_rate": 0.2,
    "min_data_in_leaf": 40,
    "transform": "log",
    "mask_dispatch": True,
}


@dataclass(frozen=True, slots=True)
class TrainResult:
    model_bytes: bytes
    report: dict[str, Any]


def analytical_for(profiles: list[str], loader: Any = None, **kwargs: float) -> AnalyticalPredictor:
    """The analytical model over the named latency profiles (those that load)."""
    if loader is None:
        from ascendra_proxy.engine.profile import ProfileError, load_profile

        def loader(name: str) -> StepTimeModel | None:
            try:
                return load_profile(name)
            except ProfileError:
                return None

    models: dict[str, StepTimeModel] = {}
    for p in profiles:
        m = loader(p)
        if p and m is not None:
            models[p] = m
    return AnalyticalPredictor(models, **kwargs)


def _request_weights(groups: npt.NDArray[np.object_]) -> FloatArray:
    """1 / (rows of the row's request): every request weighs the same, however long it
    waited (a request held for 10 s gives 100 rows; without this, overload would decide
    what the model learns about every load)."""
    counts = Counter(groups.tolist())
    return np.fromiter((1.0 / counts[g] for g in groups.tolist()), np.float64, len(groups))


def _fit(
    x: np.ndarray,
    y: FloatArray,
    groups: npt.NDArray[np.object_],
    quantile: float,
    seed: int,
    p: Mapping[str, Any],
    size: tuple[int, int, int],
) -> lgb.Booster:
    rounds, leaves, depth = size
    w = _request_weights(groups)
    if p["mask_dispatch"]:  # a copy without dispatch times: the model copes when they are absent
        masked = x.copy()
        masked[:, DISPATCH_COLUMNS] = np.nan
        x, y, w = np.vstack([x, masked]), np.concatenate([y, y]), np.concatenate([w, w])
    params = {
        "objective": "quantile",
        "alpha": quantile,
        "num_leaves": leaves,
        "max_depth": depth,
        "learning_rate": p["learning_rate"],
        "min_data_in_leaf": p["min_data_in_leaf"],
        "deterministic": True,
        "num_threads": 1,
        "seed": seed,
        "force_col_wise": True,
        "verbosity": -1,
    }
    target = np.log(y + LOG_OFFSET_S) if p["transform"] == "log" else y
    data = lgb.Dataset(x, target, weight=w, feature_name=list(FEATURE_NAMES), free_raw_data=False)
    return lgb.train(params, data, num_boost_round=rounds)


def _metrics(pred: FloatArray, actual: FloatArray, scale: FloatArray) -> dict[str, float]:
    err = np.abs(pred - actual)
    rel = err / scale
    return {
        "mae_s": float(err.mean()),
        "p90_abs_err_s": float(np.percentile(err, 90)),
        "mae_over_slo": float(rel.mean()),
        "p90_abs_err_over_slo": float(np.percentile(rel, 90)),
        "calibration": float(np.mean(actual <= pred)),
    }


def evaluate(
    rows: LabelledRows, pred: Prediction, slo_ttft: float, slo_tbt: float
) -> dict[str, float]:
    """Error figures of ``pred`` on ``rows`` (see the module docstring); rows without an
    SLO use ``slo_ttft`` / ``slo_tbt``."""
    out: dict[str, float] = {}
    first = ~rows.batch.resident
    st = np.where(np.isnan(rows.slo_ttft_s), slo_ttft, rows.slo_ttft_s)
    sb = np.where(np.isnan(rows.slo_tbt_s), slo_tbt, rows.slo_tbt_s)
    if first.any():
        m = _metrics(pred.ttft_s[first], rows.ttft_s[first], st[first])
        out.update({f"ttft_{k}": v for k, v in m.items()})
    k = rows.batch.horizon_tokens
    has = ~np.isnan(rows.next_token_s)
    if has.any():
        m = _metrics(pred.next_k_s[has], rows.next_token_s[has] * k, sb[has] * k)
        out.update({f"next_k_{k2}": v for k2, v in m.items()})
    return {key: round(v, 6) for key, v in out.items()}


def _importance(b: lgb.Booster) -> dict[str, float]:
    gain = b.feature_importance("gain")
    total = float(gain.sum()) or 1.0
    pairs = sorted(zip(FEATURE_NAMES, gain, strict=True), key=lambda p: (-p[1], p[0]))
    return {name: round(float(g) / total, 6) for name, g in pairs if g > 0}


def train(
    rows: LabelledRows,
    quantile: float = 0.9,
    seed: int = 0,
    holdout: float = 0.2,
    params: Mapping[str, Any] | None = None,
    analytical: AnalyticalPredictor | None = None,
    slo_defaults: tuple[float, float] = (1.0, 0.15),
) -> TrainResult:
    """Fit, evaluate and serialise; see the module docstring."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    p = {**DEFAULT_PARAMS, **(params or {})}
    profiles = sorted({b.profile for b in rows.batch.backends if b.profile})
    an = analytical if analytical is not None else analytical_for(profiles)
    builder = FeatureBuilder(an, profiles)
    fit_rows, test_rows = rows.split(holdout, seed) if holdout > 0 else (rows, None)
    if len(fit_rows) == 0:
        raise ValueError("no training rows left after the held-out split")
    x = builder.build(fit_rows.batch, None, fit_rows.extras)
    first = ~fit_rows.batch.resident
    if not first.any():
        raise ValueError("no first-token rows (every row is a streaming request)")
    size = (int(p["num_boost_round"]), int(p["num_leaves"]), int(p["max_depth"]))
    groups = np.asarray(fit_rows.groups, dtype=object)
    ttft_b = _fit(x[first], fit_rows.ttft_s[first], groups[first], quantile, seed, p, size)
    has = ~np.isnan(fit_rows.next_token_s)
    if not has.any():
        raise ValueError("no rows with a next-k label (requests too short for the horizon)")
    size = (int(p["next_boost_round"]), int(p["next_num_leaves"]), int(p["next_max_depth"]))
    nt_b = _fit(x[has], fit_rows.next_token_s[has], groups[has], quantile, seed, p, size)
    doc = {
        "format": FILE_FORMAT,
        "format_version": FILE_VERSION,
        "schema_version": SCHEMA_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "profiles": profiles,
        "quantile": quantile,
        "targets": {
            "ttft": {"transform": p["transform"], "model": ttft_b.model_to_string()},
            "next_token": {"transform": p["transform"], "model": nt_b.model_to_string()},
        },
        "training": {
            "rows": len(fit_rows),
            "holdout_rows": 0 if test_rows is None else len(test_rows),
            "seed": seed,
            "params": p,
        },
    }
    data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"
    report: dict[str, Any] = {
        "quantile": quantile,
        "seed": seed,
        "rows": {"train": len(fit_rows), "holdout": 0 if test_rows is None else len(test_rows)},
        "importance": {"ttft": _importance(ttft_b), "next_token": _importance(nt_b)},
    }
    if test_rows is not None and len(test_rows):
        report.update(_compare(data, test_rows, an, slo_defaults))
    return TrainResult(data, report)


def _compare(
    data: bytes, rows: LabelledRows, an: AnalyticalPredictor, slo: tuple[float, float]
) -> dict[str, Any]:
    from ascendra_proxy.predictor.model import LearnedPredictor

    learned = LearnedPredictor("<memory>", an, parse_model(data))
    first = int((~rows.batch.resident).sum())
    with_times = learned.predict_with(rows.batch, rows.extras)
    return {
        "holdout_first_token_rows": first,
        "holdout_next_k_rows": int((~np.isnan(rows.next_token_s)).sum()),
        "learned": evaluate(rows, with_times, *slo),
        "learned_without_dispatch_times": evaluate(rows, learned.predict(rows.batch), *slo),
        "analytical": evaluate(rows, an.predict(rows.batch), *slo),
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a fixed-width table (what ``ascendra-proxy train`` prints)."""
    lines = [
        f"rows: train {report['rows']['train']}, held out {report['rows']['holdout']} "
        f"({report.get('holdout_first_token_rows', 0)} first-token, "
        f"{report.get('holdout_next_k_rows', 0)} with next-k)   quantile {report['quantile']}"
    ]
    if "learned" in report:
        sides = ("learned", "learned_without_dispatch_times", "analytical")
        keys = sorted(set().union(*(report[s] for s in sides)))
        lines.append(
            f"{'held-out metric':<30} {'learned':>9} {'(no disp.)':>10} {'analytical':>10}"
        )
        for k in keys:
            a, b, c = (report[s].get(k, math.nan) for s in sides)
            lines.append(f"{k:<30} {a:>9.4f} {b:>10.4f} {c:>10.4f}")
    for target, imp in report["importance"].items():
        top = ", ".join(f"{n} {v:.2f}" for n, v in list(imp.items())[:8])
        lines.append(f"importance ({target}, gain share): {top}")
    return "\n".join(lines)
