"""The client-facing sections of the proxy config: connection hygiene and per-key SLO access.

Theory of operation.  Loaded by the strict loader like every section of ``config.py`` (which
re-exports these classes and wires them into ``ProxyConfig``):

``connections:`` bounds what one client connection may hold: the time to send a request's
headers and its body, the time an idle keep-alive connection stays open, and how many
connections are open at once (``proxy/connections.py`` enforces them).  The defaults are
safe for a public listener; they are far above what a well-behaved client needs.

``auth.clients:`` gives a client key its own SLO access: which ``x-slo-class`` values it may
send and the tightest ``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` it may ask for;
``auth.default_slo_access`` is the same for every other caller (keys in ``api_keys``, or
anyone when the API is open).  Where a limit is omitted a caller may use every class and may
loosen its SLO but never tighten it below what it would get without the header (its class,
else its model's or the default SLO): a client cannot jump the queue by declaring itself
urgent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ascendra_proxy.configload import ConfigError
from ascendra_proxy.core.slo import SLOAccess


@dataclass(frozen=True, slots=True)
class ConnectionsConfig:
    header_timeout_s: float = field(default=10.0, metadata={"gt": 0})  # open/first byte -> headers
    body_timeout_s: float = field(default=60.0, metadata={"gt": 0})  # headers -> whole body
    idle_timeout_s: float = field(default=30.0, metadata={"gt": 0})  # keep-alive, no request
    max_connections: int = field(default=4096, metadata={"ge": 1})  # open client connections


def _access(
    classes: tuple[str, ...] | None, min_ttft_ms: float | None, min_tpot_ms: float | None
) -> SLOAccess:
    return SLOAccess(None if classes is None else frozenset(classes), min_ttft_ms, min_tpot_ms)


def _check_classes(classes: tuple[str, ...] | None) -> None:
    if classes is not None and len(set(classes)) != len(classes):
        raise ConfigError("slo_classes", f"a class is listed twice: {list(classes)}")


@dataclass(frozen=True, slots=True)
class SLOAccessConfig:
    """SLO access of callers without an ``auth.clients`` entry (every key, or the open API)."""

    slo_classes: tuple[str, ...] | None = None  # x-slo-class values allowed; None: every class
    min_ttft_ms: float | None = field(default=None, metadata={"gt": 0})  # None: its class's
    min_tpot_ms: float | None = field(default=None, metadata={"gt": 0})

    def validate(self) -> None:
        _check_classes(self.slo_classes)

    def access(self) -> SLOAccess:
        return _access(self.slo_classes, self.min_ttft_ms, self.min_tpot_ms)


@dataclass(frozen=True, slots=True)
class ClientKeyConfig:
    """One client key with its own SLO access (the key is accepted like ``api_keys``)."""

    key: str = field(repr=False)  # "env:VAR" reads it from the environment
    slo_classes: tuple[str, ...] | None = None  # x-slo-class values allowed; None: every class
    min_ttft_ms: float | None = field(default=None, metadata={"gt": 0})  # tightest override
    min_tpot_ms: float | None = field(default=None, metadata={"gt": 0})  # None: its class's

    def validate(self) -> None:
        if not self.key:
            raise ConfigError("key", "must not be empty")
        _check_classes(self.slo_classes)

    def access(self) -> SLOAccess:
        return _access(self.slo_classes, self.min_ttft_ms, self.min_tpot_ms)


def check_client_keys(
    api_keys: tuple[str, ...],
    clients: tuple[ClientKeyConfig, ...],
    default: SLOAccessConfig,
    slo_classes: set[str],
) -> None:
    """Across sections: every key once, every class a client may use configured."""
    seen: dict[str, str] = {}
    named = [(f"auth.api_keys[{i}]", k) for i, k in enumerate(api_keys)]
    named += [(f"auth.clients[{i}].key", c.key) for i, c in enumerate(clients)]
    for path, key in named:
        if key in seen:
            raise ConfigError(path, f"duplicate client key (also {seen[key]})")
        seen[key] = path
    lists = [(f"auth.clients[{i}]", c.slo_classes) for i, c in enumerate(clients)]
    for path, names in [("auth.default_slo_access", default.slo_classes), *lists]:
        for j, name in enumerate(names or ()):
            if name not in slo_classes:
                known = ", ".join(sorted(slo_classes)) or "none configured"
                raise ConfigError(
                    f"{path}.slo_classes[{j}]", f"unknown SLO class {name!r} (slo.classes: {known})"
                )
