"""The policy registry: read-only, every entry builds a conforming, deterministic policy."""

from __future__ import annotations

import dataclasses

import pytest
from core_builders import request, snapshot

from ascendra_proxy.core.backend import BackendInfo, Role
from ascendra_proxy.core.decisions import Dispatch
from ascendra_proxy.core.policies.least_loaded import LeastLoadedParams
from ascendra_proxy.core.policies.registry import POLICIES, build_policy, default_params

INFOS = (BackendInfo("a", "p", Role.MIXED, "vllm", "m"),)


def test_registry_names_the_baselines() -> None:
    assert {"round_robin", "least_loaded", "ascendra"} <= set(POLICIES)
    for name, spec in POLICIES.items():
        assert spec.name == name
        assert dataclasses.is_dataclass(spec.params_type)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        POLICIES["x"] = POLICIES["round_robin"]  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_policy_builds_and_routes(name: str) -> None:
    policy = build_policy(name, default_params(name), INFOS)
    assert policy.name == name
    d = policy.route(request(), [snapshot("a")], 0.0)
    # Every policy sends a lone request to the lone healthy backend, with a label-safe reason.
    assert isinstance(d, Dispatch) and d.backend == "a"
    assert d.reason.replace("_", "").isalnum()


def test_params_type_is_enforced() -> None:
    with pytest.raises(TypeError, match="LeastLoadedParams"):
        build_policy("least_loaded", object(), INFOS)
    assert build_policy("least_loaded", LeastLoadedParams(2.0), INFOS).name == "least_loaded"


def test_unknown_policy_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        build_policy("nope", object(), INFOS)
