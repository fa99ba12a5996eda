"""The cpu-tiny fit (benchmarks/profile_fit.py) recovers known coefficients from clean data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from profile_fit import PARAMS, features, fit, nnls, predict

TRUE = {
    "overhead": 5.0,
    "per_token": 0.012,
    "per_seq": 0.25,
    "decode_ctx": 0.2,
    "prefill_base": 2.0,
    "prefill_attn": 1.2e-5,
    "frontend": 8.0,
}


def rows() -> list[dict[str, object]]:
    shapes: list[dict[str, object]] = []
    for n, L in [(1, 32), (1, 3072), (8, 32), (32, 32), (64, 512), (16, 1024)]:
        shapes.append({"kind": "decode", "label": f"d{n}/{L}", "n": n, "L": L, "C": n * (L + 80)})
    for L in (32, 512, 2048, 4000):
        shapes.append({"kind": "ttft", "label": f"t{L}", "L": L})
    for n, L in [(4, 512), (16, 2000), (32, 1024)]:
        shapes.append({"kind": "mixed", "label": f"m{n}/{L}", "n": n, "L": L, "C": n * 60})
        shapes.append({"kind": "ttft_mixed", "label": f"tm{n}/{L}", "n": n, "L": L, "C": n * 60})
    rng = np.random.default_rng(0)
    out = []
    for rnd in range(5):  # five rounds with +-5% noise: the medians stay close to the truth
        for shape in shapes:
            value = predict(TRUE, shape) * float(rng.uniform(0.95, 1.05))
            out.append({**shape, "round": rnd, "value_ms": value})
    return out


def test_fit_recovers_the_coefficients_that_made_the_data() -> None:
    data = rows()
    coef = fit(data)
    assert set(coef) == set(PARAMS)
    for shape in data[:17]:  # every experiment once
        assert predict(coef, shape) == pytest.approx(predict(TRUE, shape), rel=0.06)
    assert coef["per_seq"] == pytest.approx(TRUE["per_seq"], rel=0.2)
    assert coef["frontend"] == pytest.approx(TRUE["frontend"], rel=0.3)


def test_ttft_of_a_long_prompt_counts_two_prefill_chunks() -> None:
    f = features({"kind": "ttft", "L": 4000})
    assert f["frontend"] == 1.0 and f["overhead"] == 2.0 and f["per_token"] == 4000.0


def test_nnls_keeps_coefficients_non_negative() -> None:
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    b = np.array([3.0, 2.0, 1.0])  # unconstrained: slope -1; constrained: slope 0
    x = nnls(a, b)
    assert (x >= 0).all()
    assert x[1] == 0.0 and x[0] == pytest.approx(2.0)
