"""Length distributions, the fitted named workloads, and arrival processes."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen.arrivals import (
    ArrivalSpec,
    constant_arrivals,
    gamma_arrivals,
    make_arrivals,
    poisson_arrivals,
    trace_arrivals,
)
from loadgen.lengths import Fixed, Uniform, load_named_workloads, lognormal, parse_length_spec


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("spec", "default", "expected"),
    [
        ("512", "fixed", "fixed:512"),
        ("fixed:64", "uniform", "fixed:64"),
        ("uniform:10:20", "fixed", "uniform:10:20"),
        ("10:20", "uniform", "uniform:10:20"),
        ("lognormal:1000:0.5:4000", "fixed", "lognormal:1000:0.5:4000"),
    ],
)
def test_length_specs_parse(spec: str, default: str, expected: str) -> None:
    assert parse_length_spec(spec, default).describe() == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("uniform:10", "uniform takes 2 number"),
        ("fixed:1.5", "not a whole number"),
        ("uniform:20:10", "1 <= LO <= HI"),
        ("lognormal:x:1", "expected numbers"),
        ("0", "at least 1"),
    ],
)
def test_bad_length_specs_are_rejected(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_length_spec(spec)


def test_fixed_uniform_lognormal_samples() -> None:
    assert set(Fixed(5).sample(rng(), 100)) == {5}
    u = Uniform(10, 12).sample(rng(), 3000)
    assert set(u) == {10, 11, 12}
    ln = lognormal(1000, 0.5, high=3000).sample(rng(), 20000)
    assert ln.max() <= 3000 and ln.min() >= 1
    assert 900 < np.median(ln) < 1100  # truncation far in the tail barely moves the median


def test_same_generator_seed_same_lengths() -> None:
    dist = load_named_workloads()["azure-conv"].prompt
    assert np.array_equal(dist.sample(rng(3), 50), dist.sample(rng(3), 50))


@pytest.mark.parametrize(
    ("name", "prompt_median", "output_median"),
    [("azure-conv", 1020, 129), ("azure-code", 1469, 13)],
)
def test_fitted_workloads_match_the_trace_medians(
    name: str, prompt_median: float, output_median: float
) -> None:
    w = load_named_workloads()[name]
    p = w.prompt.sample(rng(), 50000)
    o = w.output.sample(rng(), 50000)
    assert abs(np.median(p) / prompt_median - 1) < 0.1
    assert abs(np.median(o) / output_median - 1) < 0.1
    assert w.prompt.high is not None and p.max() <= w.prompt.high
    assert "CC-BY 4.0" in w.source


def test_poisson_mean_rate_and_exponential_gaps() -> None:
    t = poisson_arrivals(rng(), 20.0, 20001)
    gaps = np.diff(t)
    assert t[0] == 0.0 and np.all(gaps >= 0)
    assert abs(len(gaps) / t[-1] - 20.0) < 0.5
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_keeps_the_rate_and_has_cv_one_over_sqrt_burstiness(burstiness: float) -> None:
    gaps = np.diff(gamma_arrivals(rng(), 10.0, 40001, burstiness))
    assert abs(1.0 / gaps.mean() - 10.0) < 0.35
    assert abs(gaps.std() / gaps.mean() - 1 / np.sqrt(burstiness)) < 0.05


def test_constant_and_trace_timing() -> None:
    assert np.allclose(constant_arrivals(4.0, 3), [0.0, 0.25, 0.5])
    times = [10.0, 11.0, 13.0, 14.0]  # natural rate 3 requests / 4 s = 0.75 req/s
    assert np.allclose(trace_arrivals(times), [0, 1, 3, 4])
    assert np.allclose(trace_arrivals(times, scale=2.0), [0, 0.5, 1.5, 2])
    retimed = trace_arrivals(times, rate=3.0)
    assert np.allclose(retimed, [0, 0.25, 0.75, 1.0])  # uniform time scaling by 0.75/3
    assert np.isclose((len(retimed) - 1) / retimed[-1], 3.0)
    with pytest.raises(ValueError, match="not both"):
        trace_arrivals(times, scale=2.0, rate=3.0)


def test_make_arrivals_dispatch_and_validation() -> None:
    assert np.allclose(make_arrivals(ArrivalSpec("constant", 2.0), 3, rng()), [0, 0.5, 1.0])
    with pytest.raises(ValueError, match="need a rate"):
        ArrivalSpec("poisson")
    with pytest.raises(ValueError, match="the trace has 2"):
        make_arrivals(ArrivalSpec("trace"), 3, rng(), [0.0, 1.0])
    bursty = make_arrivals(ArrivalSpec("poisson", 10.0, burstiness=0.2), 5000, rng())
    gaps = np.diff(bursty)
    assert gaps.std() / gaps.mean() > 1.8  # burstiness != 1 means gamma even if named poisson
