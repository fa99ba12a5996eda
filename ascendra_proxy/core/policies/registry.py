"""The policy registry: YAML ``policy.type`` -> typed parameters + factory.

Adding a policy touches one module under ``core/policies/``, its test, and one line in
:data:`POLICIES`.  The config loader validates the keys of the YAML ``policy:`` block
(everything but ``type``) against the policy's parameters dataclass (a frozen dataclass
whose numeric ranges are given as field metadata ``gt``/``ge``/``lt``/``le`` and whose
cross-field rules live in an optional ``validate()`` method), then calls ``check_topology``
(if any) with the configured backends, so a policy can refuse a pool layout it cannot run
(for example HP pools without an LP pool).  The driver builds the policy with
:func:`build_policy`.  :data:`POLICIES` is a read-only mapping: nothing registers at run time.

Each entry also declares what the policy uses (:class:`~ascendra_proxy.core.contracts.
PolicyNeeds`, a function of its parameters: roles, a swappable predictor, prefix hashes, SLO
classes, ticks, latency profiles); drivers and tools read :func:`needs_of` instead of
checking a policy's name.  Latency profiles are values the driver loads and passes to
:func:`build_policy` (only those the backends name; core reads no files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ascendra_proxy.core.backend import BackendInfo
from ascendra_proxy.core.contracts import Policy, PolicyNeeds, PredictorNeeds
from ascendra_proxy.core.policies.ascendra.params import AscendraParams
from ascendra_proxy.core.policies.ascendra.policy import make_ascendra
from ascendra_proxy.core.policies.least_loaded import LeastLoadedParams, make_least_loaded
from ascendra_proxy.core.policies.prefix_aware import PrefixAwareParams, make_prefix_aware
from ascendra_proxy.core.policies.round_robin import RoundRobinParams, make_round_robin
from ascendra_proxy.core.policies.topology import hp_needs_lp
from ascendra_proxy.core.predict import StepTimeModel

__all__ = [
    "POLICIES",
    "PolicySpec",
    "build_policy",
    "default_params",
    "needs_of",
    "profiles_needed",
]

P = TypeVar("P")

# name -> step-time model, as the driver loaded them
Profiles = Mapping[str, StepTimeModel]


@dataclass(frozen=True, slots=True)
class PolicySpec(Generic[P]):
    name: str
    params_type: type[P]
    factory: Callable[[P, Sequence[BackendInfo], Profiles], Policy]
    summary: str
    # Returns an error message when the policy cannot run on these backends, else None.
    check_topology: Callable[[P, Sequence[BackendInfo]], str | None] | None = None
    # What the policy uses, for these parameters (drivers and tools read it).
    needs: Callable[[P], PolicyNeeds] = lambda _params: PolicyNeeds()


def _ascendra_needs(p: AscendraParams) -> PolicyNeeds:
    return PolicyNeeds(
        roles=True,
        predictor=PredictorNeeds(p.fallback_step_s, p.max_scrape_age_s),
        prefix_blocks_per_backend=p.prefix_blocks_per_backend,
        slo_classes=True,
        tick_s=p.tick_s,
        latency_profiles=True,
    )


POLICIES: Mapping[str, PolicySpec[Any]] = MappingProxyType(
    {
        "round_robin": PolicySpec(
            "round_robin", RoundRobinParams, make_round_robin, "rotate over backends per model"
        ),
        "least_loaded": PolicySpec(
            "least_loaded",
            LeastLoadedParams,
            make_least_loaded,
            "fewest proxy in-flight requests, scraped queue/KV as tie-breaks",
        ),
        "prefix_aware": PolicySpec(
            "prefix_aware",
            PrefixAwareParams,
            make_prefix_aware,
            "weighted scores: expected prefix-cache hit, in-flight requests, KV usage",
            needs=lambda p: PolicyNeeds(prefix_blocks_per_backend=p.prefix_blocks_per_backend),
        ),
        "ascendra": PolicySpec(
            "ascendra",
            AscendraParams,
            make_ascendra,
            "LP pool in deadline order, HP pool for requests predicted to miss their SLO",
            check_topology=hp_needs_lp,
            needs=_ascendra_needs,
        ),
    }
)


def default_params(name: str, policies: Mapping[str, PolicySpec[Any]] = POLICIES) -> object:
    """The parameters a policy gets when its YAML block names only ``type``."""
    return policies[name].params_type()


def needs_of(
    name: str, params: object, policies: Mapping[str, PolicySpec[Any]] = POLICIES
) -> PolicyNeeds:
    """What policy ``name`` uses with ``params``; raises KeyError/TypeError on misuse."""
    spec = policies[name]
    if not isinstance(params, spec.params_type):
        raise TypeError(f"policy {name!r} wants {spec.params_type.__name__}, got {params!r}")
    return spec.needs(params)


def profiles_needed(needs: PolicyNeeds, backends: Sequence[BackendInfo]) -> list[str]:
    """The latency profile names the driver must load for a policy, in backend order."""
    if not needs.latency_profiles:
        return []
    return list(dict.fromkeys(b.profile for b in backends if b.profile))


def build_policy(
    name: str,
    params: object,
    backends: Sequence[BackendInfo],
    profiles: Profiles | None = None,
    policies: Mapping[str, PolicySpec[Any]] = POLICIES,
) -> Policy:
    """Instantiate the policy registered as ``name``; raises KeyError/TypeError on misuse,
    ValueError when a latency profile the policy needs (:func:`profiles_needed`) is missing
    from ``profiles``."""
    spec = policies[name]
    needs = needs_of(name, params, policies)
    given = profiles or {}
    missing = [p for p in profiles_needed(needs, backends) if p not in given]
    if missing:
        raise ValueError(f"policy {name!r} needs the latency profiles {missing} as values")
    return spec.factory(params, backends, given)
