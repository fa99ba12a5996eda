"""Fault injection for reliability tests.

Theory of operation: a :class:`FaultConfig` is a plain value (parsed from ``--fault`` specs or
from the JSON of ``POST /emulator/faults``).  A :class:`FaultInjector` holds the config that is
in force, the instant it was armed and a seeded RNG, and answers the questions the server asks:

* ``refusing(now)``: drop every connection (except the ``/emulator/`` admin routes) at once;
  true while ``refuse`` is set and after a crash until ``crash_recover_s`` has passed (or until
  the faults are cleared when it is ``None``).
* ``draw_error()``: fail this generation request with ``error_status`` (share ``error_rate``).
* ``stall_remaining(now)``: the step loop sleeps this long before its next step.
* ``count_tokens(n)``: streamed-token counter for ``crash_after_tokens``.

Crashing itself (closing every open stream mid-chunk) is done by the server through the
``on_crash`` callback, which the injector calls from a timer (``crash_after_s``) or when the
token budget runs out.  Times are seconds relative to arming; ``now`` is the loop clock.

CLI spec grammar (``--fault`` may repeat)::

    crash-after-tokens=N   crash-after-s=T   crash-recover-s=R   stall=T@AFTER   stall=T
    error-rate=P           error-status=CODE refuse
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FaultConfig:
    crash_after_tokens: int | None = None
    crash_after_s: float | None = None
    # After a crash the server refuses connections; None = until the faults are cleared.
    crash_recover_s: float | None = None
    stall_s: float = 0.0
    stall_after_s: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    refuse: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "crash_after_tokens": (int,),
    "crash_after_s": (int, float),
    "crash_recover_s": (int, float),
    "stall_s": (int, float),
    "stall_after_s": (int, float),
    "error_rate": (int, float),
    "error_status": (int,),
    "refuse": (bool,),
}
_NULLABLE = {"crash_after_tokens", "crash_after_s", "crash_recover_s"}


def fault_config_from_json(data: Mapping[str, Any]) -> FaultConfig:
    """Strictly validate a JSON object into a :class:`FaultConfig` (ValueError on bad input)."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELD_TYPES:
            raise ValueError(f"unknown fault field {key!r}; known: {sorted(_FIELD_TYPES)}")
        if value is None and key in _NULLABLE:
            values[key] = None
            continue
        types = _FIELD_TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"fault field {key!r} must be {types[0].__name__}, got {value!r}")
        values[key] = value
    return _checked(FaultConfig(**values))


def _checked(cfg: FaultConfig) -> FaultConfig:
    if not 0.0 <= cfg.error_rate <= 1.0:
        raise ValueError(f"error_rate must be within [0, 1], got {cfg.error_rate}")
    if not 500 <= cfg.error_status <= 599:
        raise ValueError(f"error_status must be a 5xx code, got {cfg.error_status}")
    for name in ("crash_after_s", "crash_recover_s", "stall_s", "stall_after_s"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if cfg.crash_after_tokens is not None and cfg.crash_after_tokens < 0:
        raise ValueError(f"crash_after_tokens must not be negative, got {cfg.crash_after_tokens}")
    return cfg


def parse_fault_specs(specs: Iterable[str]) -> FaultConfig:
    """Parse ``--fault`` strings (see the module docstring) into one config."""
    values: dict[str, Any] = {}
    for spec in specs:
        key, _, arg = spec.strip().partition("=")
        try:
            values.update(_parse_one(key, arg))
        except ValueError as exc:
            raise ValueError(f"bad --fault {spec!r}: {exc}") from None
    return _checked(FaultConfig(**values))


def _parse_one(key: str, arg: str) -> dict[str, Any]:
    if key == "refuse":
        if arg:
            raise ValueError("refuse takes no value")
        return {"refuse": True}
    if not arg:
        raise ValueError("missing value")
    if key == "stall":
        duration, _, after = arg.partition("@")
        return {"stall_s": float(duration), "stall_after_s": float(after or 0.0)}
    simple: dict[str, Callable[[str], Any]] = {
        "crash-after-tokens": int,
        "crash-after-s": float,
        "crash-recover-s": float,
        "error-rate": float,
        "error-status": int,
    }
    if key not in simple:
        raise ValueError(f"unknown fault kind {key!r}")
    return {key.replace("-", "_"): simple[key](arg)}


class FaultInjector:
    """The faults in force on one server; see the module docstring."""

    def __init__(self, seed: int, on_crash: Callable[[], None]) -> None:
        self._rng = random.Random(seed)
        self._on_crash = on_crash
        self.config = FaultConfig()
        self._armed_at = 0.0
        self._tokens = 0
        self._crashed_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def apply(self, config: FaultConfig, now: float) -> None:
        """Put ``config`` in force from ``now``; clears a previous crash."""
        self.cancel()
        self.config = config
        self._armed_at = now
        self._tokens = 0
        self._crashed_at = None
        if config.crash_after_s is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(config.crash_after_s, self.crash)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def crash(self) -> None:
        """Crash now: the server closes every stream and refuses connections."""
        self._timer = None
        self._crashed_at = asyncio.get_running_loop().time()
        self._on_crash()

    def refusing(self, now: float) -> bool:
        if self.config.refuse:
            return True
        if self._crashed_at is None:
            return False
        recover = self.config.crash_recover_s
        return recover is None or now < self._crashed_at + recover

    def draw_error(self) -> bool:
        rate = self.config.error_rate
        return rate > 0.0 and self._rng.random() < rate

    def stall_remaining(self, now: float) -> float:
        cfg = self.config
        if cfg.stall_s <= 0.0:
            return 0.0
        start = self._armed_at + cfg.stall_after_s
        end = start + cfg.stall_s
        return end - now if start <= now < end else 0.0

    def count_tokens(self, n: int) -> None:
        limit = self.config.crash_after_tokens
        if limit is None or self._crashed_at is not None:
            return
        self._tokens += n
        if self._tokens >= limit:
            self.crash()

    def state(self, now: float) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "armed_s_ago": now - self._armed_at,
            "tokens_since_armed": self._tokens,
            "crashed": self._crashed_at is not None,
            "refusing": self.refusing(now),
            "stalled": self.stall_remaining(now) > 0.0,
        }
