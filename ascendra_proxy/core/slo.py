"""Per-request latency objectives and how a request's objective is chosen.

Theory of operation: an :class:`SLO` is two numbers in seconds, a time-to-first-token bound
and a mean time-between-tokens bound (the paper's success criterion is mean TBT, which is
what vLLM's benchmark calls TPOT; the config and the ``x-slo-tpot-ms`` header keep the TPOT
name llm-d uses).  :func:`resolve_slo` picks a request's SLO from an :class:`SLOTable`,
component by component, with this precedence (highest first):

1. the request headers ``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` (each overrides only its part);
2. the named class given by ``x-slo-class``;
3. the entry for the request's model;
4. the table's default.

A class name the table does not know is an error (the client asked for something that does
not exist), as is a header value that is not a positive finite number of milliseconds;
both raise :class:`SLOError`, which the proxy maps to HTTP 400 at its edge.

What a client *may* ask for is an :class:`SLOAccess` (per client key, from the config):
:func:`check_slo_access` refuses a class outside its list and an override tighter than its
floor, which by default is the SLO the request would get without the override, so headers
can loosen an SLO but never jump the queue.  Its :class:`SLOAccessError` names the limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, TypeAlias

__all__ = [
    "CLASS_HEADER",
    "SLO",
    "TPOT_HEADER",
    "TTFT_HEADER",
    "LateMode",
    "SLOAccess",
    "SLOAccessError",
    "SLOError",
    "SLOTable",
    "check_slo_access",
    "parse_slo_header_ms",
    "resolve_slo",
]

# Request headers (the names llm-d uses for the first two).
TTFT_HEADER = "x-slo-ttft-ms"
TPOT_HEADER = "x-slo-tpot-ms"
CLASS_HEADER = "x-slo-class"


class SLOError(ValueError):
    """A request asked for an SLO that cannot be honoured as written (bad header, unknown class)."""


# What a request that can no longer meet its TTFT deadline anywhere wants (core.admission):
# kept and served after the requests that can still make it, or refused at once (429).
LateMode: TypeAlias = Literal["keep", "refuse"]


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency objective of one request, in seconds, and its class's choice when late."""

    ttft_s: float
    tbt_s: float
    on_late: LateMode = "keep"

    def __post_init__(self) -> None:
        for name, value in (("ttft_s", self.ttft_s), ("tbt_s", self.tbt_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SLO.{name} must be a positive finite number, got {value!r}")

    @classmethod
    def from_ms(cls, ttft_ms: float, tpot_ms: float, on_late: LateMode = "keep") -> SLO:
        return cls(ttft_ms / 1000.0, tpot_ms / 1000.0, on_late)


def _frozen(mapping: Mapping[str, SLO]) -> Mapping[str, SLO]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class SLOTable:
    """The configured objectives: a default, per-model entries and named classes."""

    default: SLO
    models: Mapping[str, SLO] = field(default_factory=dict)
    classes: Mapping[str, SLO] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only copies: a table handed to a policy cannot be changed behind its back.
        object.__setattr__(self, "models", _frozen(self.models))
        object.__setattr__(self, "classes", _frozen(self.classes))


def _check_ms(name: str, ms: float) -> float:
    if not (math.isfinite(ms) and ms > 0):
        raise SLOError(f"header {name}: expected a positive number of milliseconds, got {ms!r}")
    return ms


def parse_slo_header_ms(name: str, value: str | None) -> float | None:
    """Parse an ``x-slo-*-ms`` header value: ``None`` when absent, else positive milliseconds."""
    if value is None:
        return None
    try:
        ms = float(value.strip())
    except ValueError:
        raise SLOError(f"header {name}: expected milliseconds, got {value!r}") from None
    return _check_ms(name, ms)


def resolve_slo(
    table: SLOTable,
    model: str,
    class_name: str | None = None,
    header_ttft_ms: float | None = None,
    header_tpot_ms: float | None = None,
) -> SLO:
    """The SLO of one request: headers > class > model > default, per component."""
    if class_name is not None:
        base = table.classes.get(class_name)
        if base is None:
            known = ", ".join(sorted(table.classes)) or "none configured"
            raise SLOError(f"unknown SLO class {class_name!r} (known: {known})")
    else:
        base = table.models.get(model, table.default)
    if header_ttft_ms is None and header_tpot_ms is None:
        return base
    ttft_s = base.ttft_s
    if header_ttft_ms is not None:
        ttft_s = _check_ms(TTFT_HEADER, header_ttft_ms) / 1000.0
    tbt_s = base.tbt_s
    if header_tpot_ms is not None:
        tbt_s = _check_ms(TPOT_HEADER, header_tpot_ms) / 1000.0
    return replace(base, ttft_s=ttft_s, tbt_s=tbt_s)


class SLOAccessError(SLOError):
    """A well-formed SLO request beyond what the client may ask for; ``header`` is the culprit."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header


@dataclass(frozen=True, slots=True)
class SLOAccess:
    """What one client may ask for: the classes it may name (``None``: all) and the tightest
    ``x-slo-*-ms`` overrides (``None``: no tighter than the SLO it gets without them)."""

    classes: frozenset[str] | None = None
    min_ttft_ms: float | None = None
    min_tpot_ms: float | None = None


def check_slo_access(
    access: SLOAccess,
    table: SLOTable,
    model: str,
    class_name: str | None,
    header_ttft_ms: float | None,
    header_tpot_ms: float | None,
) -> None:
    """Raise :class:`SLOAccessError` naming the limit when the request asks for more."""
    if class_name is not None and access.classes is not None and class_name not in access.classes:
        allowed = ", ".join(sorted(access.classes)) or "none"
        message = f"SLO class {class_name!r} is not allowed for this key (allowed: {allowed})"
        raise SLOAccessError(CLASS_HEADER, message)
    if header_ttft_ms is None and header_tpot_ms is None:
        return
    base = resolve_slo(table, model, class_name)
    limits = (
        (TTFT_HEADER, header_ttft_ms, access.min_ttft_ms, base.ttft_s),
        (TPOT_HEADER, header_tpot_ms, access.min_tpot_ms, base.tbt_s),
    )
    for header, asked, floor_ms, base_s in limits:
        if asked is None:
            continue
        floor = base_s * 1000.0 if floor_ms is None else floor_ms
        if asked < floor * (1.0 - 1e-5):  # equal up to rounding (clients send ~6 digits)
            raise SLOAccessError(
                header,
                f"header {header}: {asked:g} ms is tighter than this key may ask for "
                f"(at least {floor:g} ms)",
            )
