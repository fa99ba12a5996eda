"""Latency profiles: how long one engine step takes, and how much KV cache there is.

Theory of operation: a step's duration depends on the batch through four numbers,

* ``P`` prefill tokens scheduled in the step (sum of the chunks),
* ``D`` decoding sequences (one token each),
* ``C`` decode context tokens (sum over the decoding sequences of the tokens they attend to),
* ``A`` prefill attention work, ``Σ c·(k + c/2)`` over prefill chunks of ``c`` new tokens on
  top of ``k`` tokens already in the KV cache (causal attention of the chunk),

and the formula (all coefficients in milliseconds)::

    step_ms = overhead_ms
            + linear(P + D)
            + (D > 0) * (decode_attn_base_ms + decode_attn_per_ktok_ms * C / 1000
                         + decode_per_seq_ms * D)
            + (P > 0) * (prefill_attn_base_ms + prefill_attn_coef_ms * A)

    linear(T) = max(linear_floor_ms, linear_intercept_ms + linear_per_token_ms * T)

or, when the profile gives ``linear_table`` (measured ``[tokens, ms]`` points), the piecewise
linear interpolation of that table (flat below its first point, extended along its last
segment beyond its last point).  ``decode_per_seq_ms`` (optional, 0 by default) is a cost per
decoding sequence on top of its token's share of ``linear``: sampling and per-request host work
(scheduler, detokenizer, stream), which dominates a tiny model on a CPU.  The linear layers
are weight-read bound (flat) for small batches and compute bound above the knee; decode
attention reads the KV of every decoding sequence; prefill attention is quadratic in the
chunk.  This is what makes a long prefill in a batch slow every decoding stream on the engine.
Profiles are YAML files validated strictly: unknown keys are errors that name their path.
The ones this project fits ship inside the package (``ascendra_proxy/data/profiles``, read
with :mod:`importlib.resources`, so a wheel install has them); a name is looked up first in
the directories of ``$ASCENDRA_PROFILE_PATH``, then there; a path is read as given.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

PROFILE_PATH_ENV = "ASCENDRA_PROFILE_PATH"
PROFILE_SUFFIXES = (".yaml", ".yml")


class ProfileError(ValueError):
    """A latency profile is missing or malformed."""


@dataclass(frozen=True, slots=True)
class StepCoefficients:
    overhead_ms: float
    linear_floor_ms: float
    linear_intercept_ms: float
    linear_per_token_ms: float
    decode_attn_base_ms: float
    decode_attn_per_ktok_ms: float
    prefill_attn_base_ms: float
    prefill_attn_coef_ms: float
    # Optional measured linear-layer times [(tokens, ms), ...] with tokens increasing; when
    # given, it replaces the max(floor, intercept + slope*T) term (see linear_ms).
    linear_table: tuple[tuple[int, float], ...] = ()
    # Optional cost per decoding sequence (host work per request; see the module docstring).
    decode_per_seq_ms: float = 0.0

    def linear_ms(self, tokens: int) -> float:
        """Time of the non-attention layers for a batch of ``tokens`` tokens."""
        table = self.linear_table
        if not table:
            return max(
                self.linear_floor_ms, self.linear_intercept_ms + self.linear_per_token_ms * tokens
            )
        if tokens <= table[0][0]:
            return table[0][1]
        i = bisect.bisect_left(table, tokens, key=lambda p: p[0])
        if i >= len(table):
            i = len(table) - 1
        (t0, m0), (t1, m1) = table[i - 1], table[i]
        return m0 + (m1 - m0) * (tokens - t0) / (t1 - t0)


@dataclass(frozen=True, slots=True)
class EngineDefaults:
    """The engine settings the profiled server runs with (vLLM's defaults for that GPU)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    name: str
    description: str
    coefficients: StepCoefficients
    kv_capacity_tokens: int
    defaults: EngineDefaults
    # Per-request latency outside the engine loop (HTTP, tokenization, detokenization) that an
    # emulator may add before a request reaches the engine; 0 for the GPU profiles.
    frontend_ms: float = 0.0

    def step_time(
        self,
        prefill_tokens: int,
        decode_seqs: int,
        decode_context: int,
        prefill_attn_work: float,
    ) -> float:
        """Modelled duration in seconds of a batch described by (P, D, C, A)."""
        c = self.coefficients
        ms = c.overhead_ms + c.linear_ms(prefill_tokens + decode_seqs)
        if decode_seqs > 0:
            ms += c.decode_attn_base_ms + c.decode_attn_per_ktok_ms * decode_context / 1000.0
            ms += c.decode_per_seq_ms * decode_seqs
        if prefill_tokens > 0:
            ms += c.prefill_attn_base_ms + c.prefill_attn_coef_ms * prefill_attn_work
        return ms / 1000.0

    def prefill_time(self, prompt_tokens: int, chunk: int, cached_tokens: int = 0) -> float:
        """Seconds to prefill a prompt alone on an idle engine, in chunks of ``chunk`` tokens."""
        total = 0.0
        k = cached_tokens
        while k < prompt_tokens:
            c = min(chunk, prompt_tokens - k)
            total += self.step_time(c, 0, 0, c * (k + c / 2))
            k += c
        return total

    def num_blocks(self, block_size: int) -> int:
        return self.kv_capacity_tokens // block_size


def prefill_attention_work(chunk: int, cached: int) -> float:
    """``A`` contribution of a prefill chunk of ``chunk`` tokens after ``cached`` tokens."""
    return chunk * (cached + chunk / 2)


def _take(data: Mapping[str, Any], cls: type[Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ProfileError(f"{where}.{unknown[0]}: unknown key")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        want = names[key].type
        if key == "linear_table":
            kwargs[key] = _linear_table(value, f"{where}.{key}")
            continue
        if want in ("float", float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProfileError(f"{where}.{key}: expected a number")
            if not math.isfinite(value) or value < 0:
                raise ProfileError(f"{where}.{key}: must be finite and >= 0")
            value = float(value)
        elif want in ("int", int) and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ProfileError(f"{where}.{key}: expected a positive integer")
        kwargs[key] = value
    required = [f.name for f in fields(cls) if f.default is MISSING]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ProfileError(f"{where}.{missing[0]}: missing")
    return cls(**kwargs)


def _linear_table(value: Any, where: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise ProfileError(f"{where}: expected a list of at least two [tokens, ms] pairs")
    out: list[tuple[int, float]] = []
    for i, pair in enumerate(value):
        ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)
        if not ok or isinstance(pair[1], bool) or not isinstance(pair[1], int | float):
            raise ProfileError(f"{where}[{i}]: expected [tokens, ms]")
        if out and pair[0] <= out[-1][0]:
            raise ProfileError(f"{where}[{i}]: tokens must increase")
        if pair[0] < 1 or pair[1] < 0:
            raise ProfileError(f"{where}[{i}]: tokens must be >= 1 and ms >= 0")
        out.append((pair[0], float(pair[1])))
    return tuple(out)


def parse_profile(data: Any, source: str = "<profile>") -> LatencyProfile:
    """Validate a profile document (already parsed from YAML)."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: expected a mapping at the top level")
    allowed = {"name", "description", "step_ms", "kv_cache", "engine_defaults", "frontend_ms"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ProfileError(f"{source}: {unknown[0]}: unknown key")
    for key in ("name", "step_ms", "kv_cache"):
        if key not in data:
            raise ProfileError(f"{source}: {key}: missing")
    kv = data["kv_cache"]
    if not isinstance(kv, Mapping) or set(kv) != {"capacity_tokens"}:
        raise ProfileError(f"{source}: kv_cache: expected exactly the key capacity_tokens")
    capacity = kv["capacity_tokens"]
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        raise ProfileError(f"{source}: kv_cache.capacity_tokens: expected a positive integer")
    coeffs = _take(data["step_ms"], StepCoefficients, f"{source}: step_ms")
    defaults = _take(data.get("engine_defaults", {}), EngineDefaults, f"{source}: engine_defaults")
    frontend = data.get("frontend_ms", 0.0)
    if isinstance(frontend, bool) or not isinstance(frontend, int | float) or frontend < 0:
        raise ProfileError(f"{source}: frontend_ms: expected a number >= 0")
    return LatencyProfile(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        coefficients=coeffs,
        kv_capacity_tokens=capacity,
        defaults=defaults,
        frontend_ms=float(frontend),
    )


def packaged_profiles() -> Traversable:
    """The profiles shipped inside the package (``ascendra_proxy/data/profiles``)."""
    return resources.files("ascendra_proxy") / "data" / "profiles"


def profile_search_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """The directories of ``$ASCENDRA_PROFILE_PATH``, searched before the packaged profiles."""
    env = os.environ if env is None else env
    return [Path(p) for p in env.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p]


def profile_names(env: Mapping[str, str] | None = None) -> list[str]:
    """Every profile name ``load_profile`` can find, sorted."""
    places: list[Traversable] = [*profile_search_path(env), packaged_profiles()]
    names = {
        entry.name.rsplit(".", 1)[0]
        for place in places
        if place.is_dir()
        for entry in place.iterdir()
        if entry.is_file() and entry.name.endswith(PROFILE_SUFFIXES)
    }
    return sorted(names)


def is_profile_path(name_or_path: str | Path) -> bool:
    """A path (has a directory part or a YAML suffix) rather than a profile name."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return os.sep in text or "/" in text or text.endswith(PROFILE_SUFFIXES)


def read_profile_text(
    name_or_path: str | Path, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """``(source, YAML text)`` of a profile file path, or of a profile name looked up in
    ``$ASCENDRA_PROFILE_PATH`` and then among the packaged profiles."""
    if is_profile_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"latency profile file {str(path)!r} not found")
        return str(path), _read(path, str(path))
    name = str(name_or_path)
    for place in [*profile_search_path(env), packaged_profiles()]:
        for suffix in PROFILE_SUFFIXES:
            entry = place / f"{name}{suffix}"
            if entry.is_file():
                return str(entry), _read(entry, str(entry))
    known = ", ".join(profile_names(env)) or "none"
    raise ProfileError(
        f"latency profile {name!r} not found (known: {known}; a profile file is given by "
        f"its path, more names by ${PROFILE_PATH_ENV})"
    )


def load_profile(name_or_path: str | Path, env: Mapping[str, str] | None = None) -> LatencyProfile:
    """Load a profile from a file path, or by name (see :func:`read_profile_text`)."""
    source, text = read_profile_text(name_or_path, env)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: {exc}") from None
    return parse_profile(data, source)


def _read(entry: Traversable, source: str) -> str:
    try:
        return entry.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{source}: {exc}") from None
