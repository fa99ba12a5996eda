"""SLO headers under policy: a caller may loosen its SLO but not tighten it below its class
unless its key allows it; classes can be restricted per key; out of bounds is a 400 that
names the limit.  The rule itself is core's ``check_slo_access``; config is strict."""

from __future__ import annotations

from typing import Any

import pytest
from fake_backend import FakeBackend
from proxy_rig import MODEL, RigFactory, config_for

from ascendra_proxy.config import ConfigError
from ascendra_proxy.core.slo import SLO, SLOAccess, SLOAccessError, SLOTable, check_slo_access

BODY = {"model": MODEL, "prompt": "x", "max_tokens": 2}
SLO_CFG = {
    "default": {"ttft_ms": 1000, "tpot_ms": 100},
    "classes": {
        "gold": {"ttft_ms": 200, "tpot_ms": 20},
        "batch": {"ttft_ms": 9000, "tpot_ms": 300},
    },
}
AUTH = {
    "api_keys": ["plain"],
    "clients": [
        {"key": "batchy", "slo_classes": ["batch"], "min_ttft_ms": 3000},
        {"key": "fast", "min_ttft_ms": 50, "min_tpot_ms": 5},
    ],
}
TABLE = SLOTable(default=SLO(1.0, 0.1), classes={"gold": SLO(0.2, 0.02), "batch": SLO(9.0, 0.3)})


@pytest.mark.parametrize(
    ("access", "cls", "ttft", "tpot", "culprit"),
    [
        (SLOAccess(), None, 1000.0, None, None),  # equal to the default: fine
        (SLOAccess(), None, 999.0, None, "x-slo-ttft-ms"),
        (SLOAccess(), None, None, 99.0, "x-slo-tpot-ms"),
        (SLOAccess(), None, 5000.0, 500.0, None),  # looser: always fine
        (SLOAccess(), "gold", 200.0, 20.0, None),  # its class's own numbers
        (SLOAccess(), "gold", 150.0, None, "x-slo-ttft-ms"),
        (SLOAccess(), "batch", 1000.0, None, "x-slo-ttft-ms"),  # under batch's 9 s
        (SLOAccess(min_ttft_ms=100.0), None, 100.0, None, None),
        (SLOAccess(min_ttft_ms=100.0), None, 99.0, None, "x-slo-ttft-ms"),
        (SLOAccess(classes=frozenset({"batch"})), "gold", None, None, "x-slo-class"),
        (SLOAccess(classes=frozenset()), "batch", None, None, "x-slo-class"),
        (SLOAccess(classes=frozenset({"batch"})), None, None, None, None),
        (SLOAccess(), None, 999.995, None, None),  # equal up to a client's rounding
    ],
)
def test_check_slo_access(
    access: SLOAccess, cls: str | None, ttft: float | None, tpot: float | None, culprit: str | None
) -> None:
    if culprit is None:
        check_slo_access(access, TABLE, MODEL, cls, ttft, tpot)
        return
    with pytest.raises(SLOAccessError) as info:
        check_slo_access(access, TABLE, MODEL, cls, ttft, tpot)
    assert info.value.header == culprit


async def ask(r: Any, key: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    resp = await r.post(
        "/v1/completions", BODY, headers={"Authorization": f"Bearer {key}", **headers}
    )
    return resp.status, await resp.json()


async def test_slo_headers_are_bounded_per_key(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], slo=SLO_CFG, auth=AUTH) as r:
        status, body = await ask(r, "plain", {"x-slo-ttft-ms": "100"})
        err = body["error"]
        assert status == 400 and err["code"] == "slo_not_allowed"
        assert err["param"] == "x-slo-ttft-ms" and "at least 1000 ms" in err["message"]
        assert (await ask(r, "plain", {"x-slo-ttft-ms": "1500"}))[0] == 200
        assert (await ask(r, "plain", {"x-slo-class": "gold"}))[0] == 200
        status, body = await ask(r, "plain", {"x-slo-class": "gold", "x-slo-tpot-ms": "10"})
        assert status == 400 and "at least 20 ms" in body["error"]["message"]
        status, body = await ask(r, "batchy", {"x-slo-class": "gold"})
        assert status == 400 and body["error"]["param"] == "x-slo-class"
        assert "allowed: batch" in body["error"]["message"]
        assert (await ask(r, "batchy", {"x-slo-class": "batch", "x-slo-ttft-ms": "3000"}))[0] == 200
        status, body = await ask(r, "batchy", {"x-slo-ttft-ms": "2999"})
        assert status == 400 and "at least 3000 ms" in body["error"]["message"]
        assert (await ask(r, "fast", {"x-slo-ttft-ms": "50", "x-slo-tpot-ms": "5"}))[0] == 200
        assert (await ask(r, "fast", {"x-slo-ttft-ms": "49"}))[0] == 400
        assert (await ask(r, "nobody", {}))[0] == 401
        assert r.gateway.flights == {}
        assert r.gateway.telemetry.refused["slo_not_allowed"] == 5


async def test_open_api_uses_the_default_access(make_rig: RigFactory) -> None:
    auth = {"default_slo_access": {"slo_classes": ["gold"], "min_ttft_ms": 10}}
    async with make_rig([FakeBackend("a")], slo=SLO_CFG, auth=auth) as r:
        resp = await r.post("/v1/completions", BODY, headers={"x-slo-ttft-ms": "10"})
        assert resp.status == 200
        resp = await r.post("/v1/completions", BODY, headers={"x-slo-class": "batch"})
        assert resp.status == 400 and (await resp.json())["error"]["param"] == "x-slo-class"


@pytest.mark.parametrize(
    ("auth", "where"),
    [
        ({"clients": [{"key": "k", "slo_classes": ["silver"]}]}, "auth.clients[0].slo_classes[0]"),
        (
            {"default_slo_access": {"slo_classes": ["nope"]}},
            "auth.default_slo_access.slo_classes[0]",
        ),
        ({"clients": [{"key": "k", "min_ttft_ms": 0}]}, "auth.clients[0].min_ttft_ms"),
        ({"clients": [{"key": "k", "min_tpot_ms": -1}]}, "auth.clients[0].min_tpot_ms"),
        ({"clients": [{"key": ""}]}, "auth.clients[0].key"),
        ({"clients": [{"key": "k", "bogus": 1}]}, "auth.clients[0].bogus"),
        (
            {"clients": [{"key": "k", "slo_classes": ["gold", "gold"]}]},
            "auth.clients[0].slo_classes",
        ),
        ({"api_keys": ["k"], "clients": [{"key": "k"}]}, "auth.clients[0].key"),
        ({"clients": [{"key": "env:UNSET_CLIENT_KEY_VAR"}]}, "auth.clients[0].key"),
        ({"clients": [{"slo_classes": ["gold"]}]}, "auth.clients[0].key"),
    ],
)
def test_slo_access_config_is_strict(auth: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_for([FakeBackend("a", url="http://127.0.0.1:9")], slo=SLO_CFG, auth=auth)
    assert str(info.value).startswith(where), str(info.value)


@pytest.mark.parametrize(
    ("conn", "where"),
    [
        ({"header_timeout_s": 0}, "connections.header_timeout_s"),
        ({"body_timeout_s": -1}, "connections.body_timeout_s"),
        ({"idle_timeout_s": "x"}, "connections.idle_timeout_s"),
        ({"max_connections": 0}, "connections.max_connections"),
        ({"max_conns": 5}, "connections.max_conns"),
    ],
)
def test_connections_config_is_strict(conn: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_for([FakeBackend("a", url="http://127.0.0.1:9")], connections=conn)
    assert str(info.value).startswith(where), str(info.value)
