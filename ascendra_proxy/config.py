"""The proxy's YAML config: typed, frozen, and validated strictly when it is loaded.

Theory of operation.  :func:`load_config` reads YAML (duplicate keys are errors) and hands
the mapping to :func:`parse_config`, which

1. loads every section but ``policy`` into the dataclasses below with the generic strict
   loader (:mod:`ascendra_proxy.configload`: unknown keys, wrong types and out-of-range
   numbers are errors that name their path);
2. loads ``policy: {type: NAME, <param>: <value>...}``: ``NAME`` picks an entry of the core
   policy registry and the other keys must fit that policy's parameters dataclass;
3. resolves ``env:VAR`` secrets from the environment (unset or empty is an error);
4. checks what spans sections: at least one pool with backends, unique pool names, backend
   names, URLs and GPU ids, SLO entries only for served models, no backend pointing at the
   proxy itself, client keys unique and naming only configured SLO classes, and the
   policy's own topology rule (e.g. HP needs LP).

The client-facing ``connections:`` section and the per-key SLO access under
``auth.clients`` live in :mod:`ascendra_proxy.config_clients`.

The optional ``predictor:`` section (:class:`PredictorConfig`) wires the learned slack
predictor into the live proxy: a model file to load and watch, training rows to record,
periodic retraining; :mod:`ascendra_proxy.proxy.learning` carries it out.

A top-level ``simulation:`` block belongs to the simulator (``ascendra_proxy.sim.setup``):
the proxy skips it, so one file serves both; ``check-config`` validates it too.

Every problem raises :class:`ConfigError` (``path: message``).  Backends without a name are
named ``<pool>-<index>``.  Secrets are kept out of ``repr``.  ``ProxyConfig`` converts to
the core's own values (:meth:`ProxyConfig.backend_infos`, :meth:`ProxyConfig.slo_table`,
:meth:`ProxyConfig.make_policy`), so the core never imports this module.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ascendra_proxy.config_clients import (
    ClientKeyConfig,
    ConnectionsConfig,
    SLOAccessConfig,
    check_client_keys,
)
from ascendra_proxy.configload import ConfigError, describe, join_path, load, read_yaml
from ascendra_proxy.core.backend import BackendInfo, Role
from ascendra_proxy.core.contracts import Policy, PolicyNeeds
from ascendra_proxy.core.policies.registry import (
    POLICIES,
    PolicySpec,
    build_policy,
    needs_of,
    profiles_needed,
)
from ascendra_proxy.core.policies.round_robin import RoundRobinParams
from ascendra_proxy.core.slo import SLO, SLOTable
from ascendra_proxy.engine.profile import LatencyProfile, load_profile

__all__ = [
    "AuthConfig",
    "BackendConfig",
    "ClientKeyConfig",
    "ConfigError",
    "ConnectionsConfig",
    "EngineSettings",
    "HealthConfig",
    "LimitsConfig",
    "ListenConfig",
    "PolicyConfig",
    "PoolConfig",
    "PredictorConfig",
    "ProxyConfig",
    "RetrainConfig",
    "SLOAccessConfig",
    "SLOConfig",
    "SLOTarget",
    "ScrapeConfig",
    "TimeoutsConfig",
    "TrainingDataConfig",
    "load_config",
    "parse_config",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NAME_RULE = "letters, digits, '_', '-', '.', starting with a letter or digit"
ENV_PREFIX = "env:"
MiB = 1024 * 1024
DEFAULT_POLICY = "round_robin"


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value):
        raise ConfigError("name", f"invalid {what} name {value!r} ({_NAME_RULE})")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata={"ge": 0, "le": 65535})  # 0: any free port

    def validate(self) -> None:
        if not self.host:
            raise ConfigError("host", "must not be empty")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine behind a backend runs (emulator, simulator, launcher, predictor)."""

    profile: str | None = None  # latency profile: a packaged name, or a YAML file path
    max_num_seqs: int = field(default=256, metadata={"ge": 1})
    max_num_batched_tokens: int = field(default=2048, metadata={"ge": 1})
    block_size: int = field(default=16, metadata={"ge": 1})
    num_gpu_blocks: int | None = field(default=None, metadata={"ge": 1})
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    enable_prefix_caching: bool = True
    max_model_len: int = field(default=8192, metadata={"ge": 1})


def _check_url(url: str) -> None:
    """A backend base URL: http(s), a host, an optional port and path prefix, nothing else."""
    bad = ConfigError("url", f"expected a http(s) URL, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if parts.query or parts.fragment or parts.username or port == 0:
        raise bad
    if url.endswith("/v1"):
        raise ConfigError("url", f"give the server root without /v1, got {url!r}")


@dataclass(frozen=True, slots=True)
class BackendConfig:
    url: str
    engine: Literal["vllm", "sglang"]
    model: str
    name: str = ""  # default: "<pool>-<index>"
    gpu_ids: tuple[int, ...] = ()
    # The proxy's own key toward this backend; "env:VAR" reads it from the environment.
    api_key: str | None = field(default=None, repr=False)
    engine_settings: EngineSettings = field(default_factory=EngineSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def validate(self) -> None:
        _check_url(self.url)
        if not self.model:
            raise ConfigError("model", "must not be empty")
        if self.name:
            _check_name(self.name, "backend")
        if any(g < 0 for g in self.gpu_ids):
            raise ConfigError("gpu_ids", f"GPU ids must be >= 0, got {list(self.gpu_ids)}")
        if len(set(self.gpu_ids)) != len(self.gpu_ids):
            raise ConfigError("gpu_ids", f"a GPU id is listed twice: {list(self.gpu_ids)}")
        if self.api_key == "":
            raise ConfigError("api_key", "must not be empty (omit it for no key)")

    def info(self, pool: PoolConfig) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            pool=pool.name,
            role=Role(pool.role),
            engine=self.engine,
            model=self.model,
            max_num_seqs=self.engine_settings.max_num_seqs,
            priority_scheduling=self.engine_settings.scheduling_policy == "priority",
            profile=self.engine_settings.profile,
            max_num_batched_tokens=self.engine_settings.max_num_batched_tokens,
            block_size=self.engine_settings.block_size,
        )


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    role: Literal["lp", "hp", "mixed"]
    backends: tuple[BackendConfig, ...] = ()

    def __post_init__(self) -> None:
        named = tuple(
            b if b.name else replace(b, name=f"{self.name}-{i}")
            for i, b in enumerate(self.backends)
        )
        object.__setattr__(self, "backends", named)

    def validate(self) -> None:
        _check_name(self.name, "pool")


@dataclass(frozen=True, slots=True)
class SLOTarget:
    ttft_ms: float = field(metadata={"gt": 0})
    tpot_ms: float = field(metadata={"gt": 0})
    # a request of this class that cannot meet its TTFT anywhere: kept (served after the
    # others) or refused at once with 429 + Retry-After (see core/admission.py)
    on_late: Literal["keep", "refuse"] = "keep"

    def to_slo(self) -> SLO:
        return SLO.from_ms(self.ttft_ms, self.tpot_ms, self.on_late)


@dataclass(frozen=True, slots=True)
class SLOConfig:
    default: SLOTarget = SLOTarget(1000.0, 150.0)
    models: dict[str, SLOTarget] = field(default_factory=dict)  # model name -> target
    classes: dict[str, SLOTarget] = field(default_factory=dict)  # x-slo-class value -> target


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """``policy: {type: NAME, <params>}``; ``params`` is the registered params dataclass."""

    type: str = DEFAULT_POLICY
    params: object = field(default_factory=RoundRobinParams)


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    connect_s: float = field(default=5.0, metadata={"gt": 0})
    first_byte_s: float = field(default=600.0, metadata={"gt": 0})  # dispatch -> first byte
    idle_s: float = field(default=120.0, metadata={"gt": 0})  # longest silence mid-stream
    total_s: float = field(default=3600.0, metadata={"gt": 0})  # whole request

    def validate(self) -> None:
        for name in ("connect_s", "first_byte_s", "idle_s"):
            if getattr(self, name) > self.total_s:
                raise ConfigError(name, f"must not exceed total_s ({self.total_s:g})")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = field(default=4 * MiB, metadata={"ge": 1})
    max_queued_requests: int = field(default=4096, metadata={"ge": 0})
    # held requests' prompt tokens together (long prompts fill a queue sooner than short)
    max_queued_prompt_tokens: int = field(default=4 * 1024 * 1024, metadata={"ge": 0})
    max_inflight_per_backend: int | None = field(default=None, metadata={"ge": 1})


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # Client keys accepted as "Authorization: Bearer <key>"; empty: no client auth.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_key: str | None = field(default=None, repr=False)  # for /admin/*; None: admin off
    clients: tuple[ClientKeyConfig, ...] = ()  # keys with their own SLO access (config_clients)
    default_slo_access: SLOAccessConfig = field(default_factory=SLOAccessConfig)  # all others

    def validate(self) -> None:
        for i, key in enumerate(self.api_keys):
            if not key:
                raise ConfigError(f"api_keys[{i}]", "must not be empty")
        if self.admin_key == "":
            raise ConfigError("admin_key", "must not be empty (omit it to disable admin)")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    interval_s: float = field(default=2.0, metadata={"gt": 0})
    timeout_s: float = field(default=2.0, metadata={"gt": 0})
    failure_threshold: int = field(default=3, metadata={"ge": 1})  # failures to open the breaker
    cooldown_s: float = field(default=10.0, metadata={"ge": 0})  # open breaker -> probe again


@dataclass(frozen=True, slots=True)
class ScrapeConfig:
    interval_s: float = field(default=0.5, metadata={"gt": 0})
    timeout_s: float = field(default=1.0, metadata={"gt": 0})


@dataclass(frozen=True, slots=True)
class TrainingDataConfig:
    """Training rows recorded from the live proxy (``ascendra_proxy.predictor.dataset``)."""

    path: str  # rolling JSONL file; rotated siblings path.1 ... path.<keep>
    max_bytes: int = field(default=256 * MiB, metadata={"ge": 1})  # size cap of the file
    keep: int = field(default=4, metadata={"ge": 1})  # rotated files kept beside it
    horizon_tokens: int = field(default=32, metadata={"ge": 1})  # k of the next-k label
    min_interval_s: float = field(default=0.1, metadata={"gt": 0})  # rows per waiting request
    resident_interval_s: float = field(default=0.5, metadata={"gt": 0})  # ... per stream
    max_rows_per_request: int = field(default=64, metadata={"ge": 1})
    flush_s: float = field(default=1.0, metadata={"gt": 0})  # buffered rows -> file period
    tick_ms: float = field(default=20.0, metadata={"gt": 0})  # observation tick (baselines)

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("path", "must not be empty")


@dataclass(frozen=True, slots=True)
class RetrainConfig:
    """Periodic retraining in a worker process (``ascendra_proxy.predictor.retrain``)."""

    interval_s: float = field(metadata={"gt": 0})  # between starts; the first after one
    min_rows: int = field(default=5000, metadata={"ge": 1})  # labelled rows needed
    quantile: float = field(default=0.9, metadata={"gt": 0, "lt": 1})
    holdout: float = field(default=0.2, metadata={"ge": 0, "lt": 1})
    seed: int = 0


@dataclass(frozen=True, slots=True)
class PredictorConfig:
    """The learned slack predictor in the live proxy (used by the ascendra policy)."""

    model_path: str | None = None  # loaded at start, reloaded when the file changes
    reload_check_s: float = field(default=1.0, metadata={"gt": 0})  # stat period
    training_data: TrainingDataConfig | None = None
    retrain: RetrainConfig | None = None  # needs training_data and model_path
    error_metrics: bool = True  # predict each recorded row; export the error histograms

    def validate(self) -> None:
        if self.model_path == "":
            raise ConfigError("model_path", "must not be empty (omit it for none)")
        if self.retrain is not None:
            if self.training_data is None:
                raise ConfigError("retrain", "needs predictor.training_data (the rows it reads)")
            if self.model_path is None:
                raise ConfigError("retrain", "needs predictor.model_path (the file it writes)")
        data, model = self.training_data, self.model_path
        if data is not None and model is not None and Path(data.path) == Path(model):
            raise ConfigError("training_data.path", "must differ from model_path")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    pools: tuple[PoolConfig, ...]
    listen: ListenConfig = field(default_factory=ListenConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)

    def backends(self) -> list[tuple[PoolConfig, BackendConfig]]:
        """Every backend with its pool, in config order."""
        return [(p, b) for p in self.pools for b in p.backends]

    def models(self) -> set[str]:
        return {b.model for _, b in self.backends()}

    def backend_infos(self) -> tuple[BackendInfo, ...]:
        return tuple(b.info(p) for p, b in self.backends())

    def slo_table(self) -> SLOTable:
        return SLOTable(
            default=self.slo.default.to_slo(),
            models={k: v.to_slo() for k, v in self.slo.models.items()},
            classes={k: v.to_slo() for k, v in self.slo.classes.items()},
        )

    def policy_needs(self) -> PolicyNeeds:
        """What the configured policy uses (its registry entry's declaration)."""
        return needs_of(self.policy.type, self.policy.params)

    def latency_profiles(self, names: list[str] | None = None) -> dict[str, LatencyProfile]:
        """The named latency profiles (default: every one a backend names), loaded here in
        the driver: core receives them as values."""
        if names is None:
            names = list(dict.fromkeys(b.profile for b in self.backend_infos() if b.profile))
        return {name: load_profile(name) for name in names}

    def make_policy(self, policies: Mapping[str, PolicySpec[Any]] = POLICIES) -> Policy:
        """The configured policy, with the latency profiles it needs loaded."""
        p, infos = self.policy, self.backend_infos()
        wanted = profiles_needed(needs_of(p.type, p.params, policies), infos)
        return build_policy(p.type, p.params, infos, self.latency_profiles(wanted), policies)


# -- loading ---------------------------------------------------------------------------


SIMULATION_KEY = "simulation"  # the simulator's block; the proxy ignores it


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> ProxyConfig:
    """Read and validate a YAML config file (``env`` defaults to ``os.environ``)."""
    return parse_config(read_yaml(Path(path)), env=env)


def parse_config(
    data: object,
    env: Mapping[str, str] | None = None,
    policies: Mapping[str, PolicySpec[Any]] = POLICIES,
) -> ProxyConfig:
    """Validate a parsed YAML document; raise ConfigError naming the first bad path."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected a mapping at the top level, got {describe(data)}")
    rest = {k: v for k, v in data.items() if k not in ("policy", SIMULATION_KEY)}
    if "pools" not in rest:
        raise ConfigError("pools", "required key is missing")
    cfg: ProxyConfig = load(ProxyConfig, rest)
    policy = _load_policy(data.get("policy", {}), "policy", policies)
    cfg = _resolve_secrets(replace(cfg, policy=policy), os.environ if env is None else env)
    _check_pools(cfg)
    _check_references(cfg)
    _check_topology(cfg, policies[policy.type])
    return cfg


def _load_policy(data: object, path: str, policies: Mapping[str, PolicySpec[Any]]) -> PolicyConfig:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {describe(data)}")
    name = data.get("type", DEFAULT_POLICY)
    if not isinstance(name, str) or name not in policies:
        known = ", ".join(sorted(policies))
        raise ConfigError(
            join_path(path, "type"), f"unknown policy {describe(name)} (known: {known})"
        )
    spec = policies[name]
    allowed = ["type", *(f.name for f in dataclasses.fields(spec.params_type))]
    for key in data:
        if key not in allowed:
            where = join_path(path, key) if isinstance(key, str) else path
            raise ConfigError(
                where, f"unknown key for policy {name!r} (allowed: {', '.join(allowed)})"
            )
    params = load(spec.params_type, {k: v for k, v in data.items() if k != "type"}, path)
    return PolicyConfig(type=name, params=params)


def _resolve(value: str, path: str, env: Mapping[str, str]) -> str:
    if not value.startswith(ENV_PREFIX):
        return value
    var = value[len(ENV_PREFIX) :]
    if not var:
        raise ConfigError(path, "'env:' needs a variable name, e.g. env:BACKEND_KEY")
    resolved = env.get(var)
    if not resolved:
        raise ConfigError(path, f"environment variable {var} is not set or empty")
    return resolved


def _resolve_secrets(cfg: ProxyConfig, env: Mapping[str, str]) -> ProxyConfig:
    pools = []
    for i, pool in enumerate(cfg.pools):
        backends = []
        for j, b in enumerate(pool.backends):
            key = b.api_key
            if key is not None:
                key = _resolve(key, f"pools[{i}].backends[{j}].api_key", env)
            backends.append(replace(b, api_key=key))
        pools.append(replace(pool, backends=tuple(backends)))
    auth = cfg.auth
    keys = tuple(_resolve(k, f"auth.api_keys[{i}]", env) for i, k in enumerate(auth.api_keys))
    admin = None if auth.admin_key is None else _resolve(auth.admin_key, "auth.admin_key", env)
    clients = tuple(
        replace(c, key=_resolve(c.key, f"auth.clients[{i}].key", env))
        for i, c in enumerate(auth.clients)
    )
    return replace(
        cfg, pools=tuple(pools), auth=replace(auth, api_keys=keys, admin_key=admin, clients=clients)
    )


def _first_seen(seen: dict[object, str], key: object, path: str, what: str) -> None:
    """Record ``key`` at ``path``; raise if it was already seen elsewhere."""
    if key in seen:
        raise ConfigError(path, f"duplicate {what} {describe(key)} (also {seen[key]})")
    seen[key] = path


def _check_pools(cfg: ProxyConfig) -> None:
    if not cfg.pools:
        raise ConfigError("pools", "at least one pool is required")
    if not any(p.backends for p in cfg.pools):
        raise ConfigError("pools", "no pool has any backends")
    names: dict[object, str] = {}
    backend_names: dict[object, str] = {}
    urls: dict[object, str] = {}
    gpus: dict[object, str] = {}
    for i, pool in enumerate(cfg.pools):
        _first_seen(names, pool.name, f"pools[{i}].name", "pool name")
        for j, b in enumerate(pool.backends):
            at = f"pools[{i}].backends[{j}]"
            _first_seen(backend_names, b.name, f"{at}.name", "backend name")
            _first_seen(urls, b.url.lower(), f"{at}.url", "backend URL")
            for k, gpu in enumerate(b.gpu_ids):
                _first_seen(gpus, gpu, f"{at}.gpu_ids[{k}]", "GPU id")
            if _points_at_listen(b.url, cfg.listen):
                raise ConfigError(f"{at}.url", "points at the proxy's own listen address")


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_WILDCARD = {"0.0.0.0", "::"}


def _points_at_listen(url: str, listen: ListenConfig) -> bool:
    """True when a backend URL would reach the proxy itself (a forwarding loop)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port != listen.port:
        return False
    host, own = (parts.hostname or "").lower(), listen.host.lower().strip("[]")
    if own in _WILDCARD or own in _LOOPBACK:
        return host == own or host in _LOOPBACK
    return host == own


def _check_references(cfg: ProxyConfig) -> None:
    auth = cfg.auth
    check_client_keys(auth.api_keys, auth.clients, auth.default_slo_access, set(cfg.slo.classes))
    served = cfg.models()
    for model in cfg.slo.models:
        if model not in served:
            known = ", ".join(sorted(served))
            raise ConfigError(
                join_path("slo.models", model), f"no backend serves this model (served: {known})"
            )


def _check_topology(cfg: ProxyConfig, spec: PolicySpec[Any]) -> None:
    if spec.check_topology is None:
        return
    problem = spec.check_topology(cfg.policy.params, cfg.backend_infos())
    if problem is not None:
        raise ConfigError("policy.type", problem)
