"""hp_needs_lp: HP backends require LP backends serving the same models."""

from __future__ import annotations

import pytest

from ascendra_proxy.core.backend import BackendInfo, Role
from ascendra_proxy.core.policies.topology import hp_needs_lp


def info(name: str, role: Role, model: str = "m") -> BackendInfo:
    return BackendInfo(name, role.value, role, "vllm", model)


@pytest.mark.parametrize(
    ("backends", "problem"),
    [
        pytest.param([info("a", Role.LP), info("b", Role.HP)], None, id="lp+hp"),
        pytest.param([info("a", Role.MIXED)], None, id="no-hp"),
        pytest.param([info("a", Role.LP)], None, id="lp-only"),
        pytest.param([info("b", Role.HP)], "needs an lp pool", id="hp-only"),
        pytest.param([info("a", Role.MIXED), info("b", Role.HP)], "needs an lp pool", id="mixed"),
        pytest.param(
            [info("a", Role.LP, "x"), info("b", Role.HP, "x"), info("c", Role.HP, "y")],
            "models served in hp but not in lp: y",
            id="orphan-model",
        ),
    ],
)
def test_hp_needs_lp(backends: list[BackendInfo], problem: str | None) -> None:
    got = hp_needs_lp(None, backends)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got
