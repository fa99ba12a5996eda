"""What a simulation is built from: the proxy YAML, a ``simulation:`` block, and a policy.

Theory of operation: a simulation config is an ordinary proxy config (pools, roles, SLOs,
policy, and per backend the ``engine_settings`` that say which latency profile and vLLM
settings the engine runs with) plus an optional top-level ``simulation:`` block holding the
constants of what the live proxy experiences outside the engines (:class:`SimSettings`:
network hops, the abort delay).  The block is split off before the proxy config is
validated by :func:`ascendra_proxy.config.parse_config`, and is itself validated strictly by
the same loader (unknown keys are errors naming their path).

:func:`with_policy` swaps the policy, as ``--policy`` does: the policy's parameters are the
config's own when the name matches, its defaults otherwise, and a policy without a pool
that declares no use of roles (``PolicyNeeds.roles``: the baselines) sees every backend
as ``mixed``.

:func:`make_policy` builds the policy exactly as the live proxy does: through the core
registry, from the config's ``BackendInfo`` values (which carry each engine's latency
profile and batch limits, what the Ascendra policy's analytical predictor needs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ascendra_proxy.config import SIMULATION_KEY, PolicyConfig, ProxyConfig, parse_config
from ascendra_proxy.configload import ConfigError, load, read_yaml
from ascendra_proxy.core.backend import BackendInfo
from ascendra_proxy.core.contracts import Policy
from ascendra_proxy.core.policies.registry import POLICIES, PolicySpec

__all__ = [
    "SimConfig",
    "SimSettings",
    "backend_infos",
    "load_sim_config",
    "make_policy",
    "parse_sim_config",
    "policy_registry",
    "with_policy",
]


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Constants of the world around the engines (seconds)."""

    # One way between the proxy and an engine: a request reaching the engine, a step's
    # tokens reaching the proxy, a /metrics answer reaching the proxy.
    network_s: float = field(default=0.0005, metadata={"ge": 0})
    # One way between the client and the proxy (arrival, every token chunk, the end).
    client_network_s: float = field(default=0.0002, metadata={"ge": 0})
    # From the proxy closing an attempt to the engine freeing the request (vLLM notices the
    # closed connection at its next output; SGLang gets /abort_request).
    abort_s: float = field(default=0.005, metadata={"ge": 0})
    # Add the profile's frontend_ms (HTTP, tokenization) before a request reaches the engine.
    frontend_delay: bool = True
    # Spread the backends' scrape loops over one interval (False: all scrape together).
    stagger_scrapes: bool = True
    # Stop this long after the last arrival; requests still open count as unfinished.
    drain_timeout_s: float = field(default=600.0, metadata={"gt": 0})


@dataclass(frozen=True, slots=True)
class SimConfig:
    proxy: ProxyConfig
    sim: SimSettings = field(default_factory=SimSettings)


def policy_registry() -> Mapping[str, PolicySpec[Any]]:
    """The policies a simulation can run: the core registry, as in the live proxy."""
    return POLICIES


def parse_sim_config(data: object, env: Mapping[str, str] | None = None) -> SimConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("", "expected a mapping at the top level")
    sim = load(SimSettings, data.get(SIMULATION_KEY) or {}, SIMULATION_KEY)
    proxy = parse_config(data, env=env, policies=policy_registry())
    for pool, b in proxy.backends():
        if not b.engine_settings.profile:
            where = f"pools[{pool.name}].backends[{b.name}].engine_settings.profile"
            raise ConfigError(where, "the simulator needs a latency profile for every backend")
    return SimConfig(proxy, sim)


def load_sim_config(path: str | Path, env: Mapping[str, str] | None = None) -> SimConfig:
    return parse_sim_config(read_yaml(Path(path)), env)


def with_policy(cfg: SimConfig, name: str, params: object | None = None) -> SimConfig:
    """``cfg`` running policy ``name`` (see the module docstring for roles and parameters)."""
    registry = policy_registry()
    if name not in registry:
        raise ConfigError("policy.type", f"unknown policy {name!r} (known: {sorted(registry)})")
    spec = registry[name]
    proxy = cfg.proxy
    if params is None:
        same = proxy.policy.type == name
        params = proxy.policy.params if same else spec.params_type()
    pools = proxy.pools
    if not spec.needs(params).roles:
        pools = tuple(replace(p, role="mixed") for p in pools)
    proxy = replace(proxy, pools=pools, policy=PolicyConfig(type=name, params=params))
    if spec.check_topology is not None:
        problem = spec.check_topology(params, proxy.backend_infos())
        if problem is not None:
            raise ConfigError("policy.type", problem)
    return replace(cfg, proxy=proxy)


def backend_infos(proxy: ProxyConfig) -> tuple[BackendInfo, ...]:
    """Per backend, in config order, what the policy factory receives (as in the proxy)."""
    return proxy.backend_infos()


def make_policy(proxy: ProxyConfig) -> Policy:
    """The configured policy, built through the registry as the live proxy builds it (with
    the latency profiles it needs, loaded here)."""
    return proxy.make_policy(policy_registry())
