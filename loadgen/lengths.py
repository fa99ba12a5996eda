"""Token-length distributions for synthetic workloads.

Theory of operation: a :class:`LengthDist` turns an explicit ``numpy.random.Generator`` into
``n`` integer lengths.  Three shapes cover the command line (``fixed``, ``uniform``,
``lognormal``) and one covers the workloads fitted to the Azure LLM inference trace 2023
(Microsoft, CC-BY 4.0): a mixture of log-normals truncated to ``[low, high]``, sampled by
rejection so the truncation keeps the shape instead of piling mass on the bounds.  A plain
log-normal is the one-component mixture.

The fitted parameters live in ``loadgen/data/workloads.yaml`` (written by
``loadgen/fit_workloads.py``); :func:`load_named_workloads` reads them.  Only parameters are
stored, never trace rows.  Length specs on the command line:

``512`` or ``fixed:512`` - always 512; ``uniform:LO:HI`` - integers in [LO, HI];
``lognormal:MEDIAN:SIGMA[:MAX]`` - log-normal with that median and log-space sigma.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import numpy as np
import yaml

__all__ = [
    "Fixed",
    "LengthDist",
    "LogNormalMixture",
    "NamedWorkload",
    "Uniform",
    "load_named_workloads",
    "lognormal",
    "parse_length_spec",
]

LENGTH_KINDS = ("fixed", "uniform", "lognormal")


class LengthDist(Protocol):
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Fixed:
    value: int

    def __post_init__(self) -> None:
        if self.value < 1:
            raise ValueError(f"a fixed length must be at least 1, got {self.value}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)

    def describe(self) -> str:
        return f"fixed:{self.value}"


@dataclass(frozen=True, slots=True)
class Uniform:
    low: int
    high: int  # inclusive

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ValueError(f"uniform bounds need 1 <= LO <= HI, got {self.low}:{self.high}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)

    def describe(self) -> str:
        return f"uniform:{self.low}:{self.high}"


@dataclass(frozen=True, slots=True)
class LogNormalMixture:
    """Mixture of log-normals (parameters of ln(length)), truncated to [low, high]."""

    weights: tuple[float, ...]
    mu: tuple[float, ...]
    sigma: tuple[float, ...]
    low: int = 1
    high: int | None = None

    def __post_init__(self) -> None:
        k = len(self.weights)
        if k == 0 or len(self.mu) != k or len(self.sigma) != k:
            raise ValueError("a log-normal mixture needs equally many weights, mu and sigma")
        if any(w < 0 for w in self.weights) or not math.isclose(
            sum(self.weights), 1.0, abs_tol=1e-4
        ):
            raise ValueError(f"mixture weights must be >= 0 and sum to 1, got {self.weights}")
        if any(s <= 0 for s in self.sigma):
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.low < 1 or (self.high is not None and self.high < self.low):
            raise ValueError(f"bad truncation bounds [{self.low}, {self.high}]")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        filled = 0
        high = np.inf if self.high is None else self.high
        probs = np.asarray(self.weights) / sum(self.weights)
        for _ in range(1000):
            if filled == n:
                return out
            want = n - filled
            draw = max(16, int(want * 1.5))
            comp = rng.choice(len(self.weights), size=draw, p=probs)
            logs = rng.normal(np.asarray(self.mu)[comp], np.asarray(self.sigma)[comp])
            vals = np.rint(np.exp(np.minimum(logs, 30.0)))
            vals = vals[(vals >= self.low) & (vals <= high)][:want]
            out[filled : filled + len(vals)] = vals
            filled += len(vals)
        raise ValueError(f"{self.describe()}: truncation bounds reject almost every sample")

    def describe(self) -> str:
        if len(self.weights) == 1:
            text = f"lognormal:{math.exp(self.mu[0]):.0f}:{self.sigma[0]:.3g}"
            return text + (f":{self.high}" if self.high is not None else "")
        return f"lognormal-mixture(k={len(self.weights)}, [{self.low}, {self.high}])"


def lognormal(
    median: float, sigma: float, low: int = 1, high: int | None = None
) -> LogNormalMixture:
    if median <= 0:
        raise ValueError(f"log-normal median must be positive, got {median}")
    return LogNormalMixture((1.0,), (math.log(median),), (sigma,), low, high)


def parse_length_spec(spec: str, default_kind: str = "fixed") -> LengthDist:
    """Parse ``fixed:N``, ``uniform:LO:HI``, ``lognormal:MEDIAN:SIGMA[:MAX]`` (kind optional)."""
    parts = [p.strip() for p in spec.strip().split(":")]
    kind = default_kind
    if parts and parts[0] in LENGTH_KINDS:
        kind, parts = parts[0], parts[1:]
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"length spec {spec!r}: expected numbers after the kind") from None
    arity = {"fixed": (1,), "uniform": (2,), "lognormal": (2, 3)}[kind]
    if len(nums) not in arity:
        raise ValueError(
            f"length spec {spec!r}: {kind} takes {' or '.join(map(str, arity))} number(s); "
            "forms: N, fixed:N, uniform:LO:HI, lognormal:MEDIAN:SIGMA[:MAX]"
        )
    if kind == "fixed":
        return Fixed(_whole(nums[0], spec))
    if kind == "uniform":
        return Uniform(_whole(nums[0], spec), _whole(nums[1], spec))
    high = _whole(nums[2], spec) if len(nums) == 3 else None
    return lognormal(nums[0], nums[1], 1, high)


def _whole(value: float, spec: str) -> int:
    if value != int(value):
        raise ValueError(f"length spec {spec!r}: {value} is not a whole number of tokens")
    return int(value)


@dataclass(frozen=True, slots=True)
class NamedWorkload:
    name: str
    prompt: LogNormalMixture
    output: LogNormalMixture
    mean_rate_rps: float
    interarrival_cv: float
    source: str


def load_named_workloads(text: str | None = None) -> dict[str, NamedWorkload]:
    """The fitted workloads (``azure-conv``, ``azure-code``) from the packaged YAML."""
    if text is None:
        text = resources.files("loadgen").joinpath("data/workloads.yaml").read_text("utf-8")
    doc = yaml.safe_load(text)
    source = str(doc.get("source", ""))
    out: dict[str, NamedWorkload] = {}
    for name, entry in doc["workloads"].items():
        arrivals = entry.get("arrivals", {})
        out[name] = NamedWorkload(
            name=name,
            prompt=_mixture(entry["prompt_tokens"]),
            output=_mixture(entry["output_tokens"]),
            mean_rate_rps=float(arrivals.get("mean_rate_rps", 0.0)),
            interarrival_cv=float(arrivals.get("interarrival_cv", 1.0)),
            source=source,
        )
    return out


def _mixture(entry: Mapping[str, Any]) -> LogNormalMixture:
    def floats(key: str) -> tuple[float, ...]:
        values: Sequence[Any] = entry[key]
        return tuple(float(v) for v in values)

    high = entry.get("max")
    weights = floats("weights")
    total = sum(weights)
    return LogNormalMixture(
        tuple(w / total for w in weights),
        floats("mu"),
        floats("sigma"),
        int(entry.get("min", 1)),
        None if high is None else int(high),
    )
