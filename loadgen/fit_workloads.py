"""Fit the named synthetic workloads to the Azure LLM inference trace 2023 and store them.

Theory of operation: for each trace (conversation and code services, Azure LLM inference
trace 2023, Microsoft, CC-BY 4.0, as processed in the ``microsoft/vidur`` repository) this
fits, separately for prompt and output lengths, a mixture of ``K`` normals to ln(length) by
expectation-maximisation (deterministic start at quantiles, fixed iteration count), truncated
to the observed [min, max].  It also records the mean arrival rate and the coefficient of
variation of inter-arrival gaps, and the Kolmogorov-Smirnov distance of each fitted
distribution from the data as a quality note.  Prompt and output lengths are nearly
uncorrelated in both traces (|r| of the logs < 0.1), so they are fitted independently.

Only the fitted numbers are written (``loadgen/data/workloads.yaml``), never trace rows.
Run from the repository root::

    python -m loadgen.fit_workloads --traces-dir ../shared/data/traces
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from loadgen.lengths import LogNormalMixture
from loadgen.traces import read_trace

SOURCE = "Azure LLM inference trace 2023, Microsoft, CC-BY 4.0"
TRACES = {"azure-conv": "splitwise_conv.csv", "azure-code": "splitwise_code.csv"}


def fit_log_mixture(values: np.ndarray, k: int = 4, iterations: int = 300) -> LogNormalMixture:
    """EM fit of a k-component normal mixture to ln(values), truncated to the data range."""
    x = np.log(values.astype(float))
    mu = np.quantile(x, (np.arange(k) + 0.5) / k)
    sigma = np.full(k, max(x.std() / k, 1e-2))
    weights = np.full(k, 1.0 / k)
    for _ in range(iterations):
        dens = weights * _normal_pdf(x[:, None], mu, sigma)
        resp = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        nk = np.maximum(resp.sum(axis=0), 1e-12)
        weights = nk / len(x)
        mu = (resp * x[:, None]).sum(axis=0) / nk
        sigma = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk)
        sigma = np.maximum(sigma, 0.05)  # a point mass would make the density unbounded
    order = np.argsort(mu)
    return LogNormalMixture(
        tuple(round(float(w), 6) for w in weights[order] / weights.sum()),
        tuple(round(float(m), 5) for m in mu[order]),
        tuple(round(float(s), 5) for s in sigma[order]),
        int(values.min()),
        int(values.max()),
    )


def _normal_pdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    z = (x - mu) / sigma
    pdf: np.ndarray = np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
    return pdf


def ks_distance(values: np.ndarray, dist: LogNormalMixture, n: int = 200_000) -> float:
    """Two-sample KS distance between the data and a large seeded sample of the fit."""
    sample = np.sort(dist.sample(np.random.default_rng(0), n))
    data = np.sort(values)
    grid = np.union1d(data, sample)
    cdf_data = np.searchsorted(data, grid, side="right") / len(data)
    cdf_fit = np.searchsorted(sample, grid, side="right") / len(sample)
    return float(np.max(np.abs(cdf_data - cdf_fit)))


def describe_fit(values: np.ndarray, dist: LogNormalMixture) -> dict[str, Any]:
    sample = dist.sample(np.random.default_rng(1), 200_000)
    return {
        "kind": "lognormal-mixture",
        "weights": list(dist.weights),
        "mu": list(dist.mu),
        "sigma": list(dist.sigma),
        "min": dist.low,
        "max": dist.high,
        "check": {
            "ks_distance": round(ks_distance(values, dist), 4),
            "data_median_mean_p99": _stats(values),
            "fit_median_mean_p99": _stats(sample),
        },
    }


def _stats(v: np.ndarray) -> list[float]:
    return [
        round(float(np.median(v)), 1),
        round(float(v.mean()), 1),
        round(float(np.quantile(v, 0.99)), 1),
    ]


def fit_trace(path: Path, k: int) -> dict[str, Any]:
    rows = read_trace(path, require_arrivals=True)
    arrivals = np.array([r.arrived_at for r in rows], dtype=float)
    prompt = np.array([r.prompt_tokens for r in rows])
    output = np.array([r.output_tokens for r in rows])
    gaps = np.diff(arrivals)
    return {
        "trace": path.name,
        "requests": len(rows),
        "arrivals": {
            "mean_rate_rps": round(float(len(rows) / (arrivals[-1] - arrivals[0])), 4),
            "interarrival_cv": round(float(gaps.std() / gaps.mean()), 4),
        },
        "prompt_tokens": describe_fit(prompt, fit_log_mixture(prompt, k)),
        "output_tokens": describe_fit(output, fit_log_mixture(output, k)),
    }


HAND_WRITTEN = "# Everything below is written by hand"


def _hand_written(path: Path) -> str:
    """The hand-written tail of an existing file (SLO mixes, trace workloads), kept as is."""
    try:
        text = path.read_text("utf-8")
    except OSError:
        return ""
    at = text.find(HAND_WRITTEN)
    return "" if at < 0 else text[at:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces-dir", type=Path, default=Path("../shared/data/traces"))
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "data" / "workloads.yaml"
    )
    args = parser.parse_args(argv)
    fits = {name: fit_trace(args.traces_dir / f, args.components) for name, f in TRACES.items()}
    doc = {
        "source": SOURCE,
        "note": "Parameters only, no trace rows; regenerate: python -m loadgen.fit_workloads",
        "workloads": fits,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Synthetic workloads fitted to the {SOURCE}.\n"
    args.out.write_text(
        header
        + yaml.safe_dump(doc, sort_keys=False, width=100, default_flow_style=None)
        + _hand_written(args.out),
        "utf-8",
    )
    for name, entry in fits.items():
        for key in ("prompt_tokens", "output_tokens"):
            print(f"{name:11s} {key:14s} KS={entry[key]['check']['ks_distance']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
