"""Auth, admin API, /metrics, /health, /ready, /v1/models."""

from __future__ import annotations

import asyncio

import pytest
from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events

AUTH = {
    "api_keys": ["k1", "k2"],
    "admin_key": "adm",
    "default_slo_access": {"min_ttft_ms": 1},  # the test asks for a tight TTFT
}
BODY = {"model": MODEL, "prompt": "x", "stream": True}


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer nope", 401),
        ("Basic k1", 401),
        ("Bearer k1", 200),
        ("bearer k2", 200),
    ],
)
async def test_client_keys(make_rig: RigFactory, header: str | None, status: int) -> None:
    async with make_rig([FakeBackend("a")], auth=AUTH) as r:
        headers = {"Authorization": header} if header else {}
        for path in ("/v1/completions",):
            resp = await r.post(path, BODY, headers=headers)
            assert resp.status == status
            if status == 401:
                err = (await resp.json())["error"]
                assert err["type"] == "authentication_error"
        models = await r.session.get(r.url + "/v1/models", headers=headers)
        assert models.status == status


async def test_client_key_is_not_forwarded_and_backend_key_is(make_rig: RigFactory) -> None:
    keyed, open_ = FakeBackend("a", api_key="backend-secret"), FakeBackend("b")
    async with make_rig([keyed, open_], auth=AUTH) as r:
        for _ in range(2):
            resp = await r.post("/v1/completions", BODY, headers={"Authorization": "Bearer k1"})
            await read_events(resp)
        assert keyed.auth_headers == ["Bearer backend-secret"]
        assert open_.auth_headers == [None]


async def test_admin_disabled_without_key(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.session.get(r.url + "/admin/backends")
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "admin_disabled"


async def test_admin_views(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=3, first_delay_s=0.3))
    fake.metrics_text = (
        "vllm:num_requests_running 2\nvllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.5\n"
    )
    async with make_rig([fake], auth=AUTH) as r:
        admin = {"Authorization": "Bearer adm"}
        assert (
            await r.session.get(r.url + "/admin/backends", headers={"Authorization": "Bearer k1"})
        ).status == 401
        await asyncio.sleep(0.2)  # a few scrapes
        task = asyncio.create_task(
            r.post(
                "/v1/completions",
                BODY,
                headers={"Authorization": "Bearer k1", "x-slo-ttft-ms": "250"},
            )
        )
        await wait_until(lambda: fake.running >= 1)
        backends = await (await r.session.get(r.url + "/admin/backends", headers=admin)).json()
        (row,) = backends["data"]
        assert row["name"] == "a" and row["inflight"] == 1 and row["healthy"]
        assert row["scraped"]["running"] == 2 and row["scraped"]["kv_usage"] == 0.5
        assert 0 <= row["scraped"]["age_s"] < 1
        reqs = await (await r.session.get(r.url + "/admin/requests", headers=admin)).json()
        (req,) = reqs["data"]
        assert req["backend"] == "a" and req["phase"] == "dispatched" and req["tokens"] == 0
        assert req["slo"]["ttft_ms"] == 250 and req["slack_s"] < 0.25
        await read_events(await task)
        reqs = await (await r.session.get(r.url + "/admin/requests", headers=admin)).json()
        assert reqs["data"] == []


async def test_metrics_exposition(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a", script=Script(tokens=4)), FakeBackend("b")]) as r:
        await read_events(await r.post("/v1/completions", BODY))
        resp = await r.session.get(r.url + "/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        for needle in [
            'ascendra_requests_total{model="m",outcome="completed"} 1.0',
            "ascendra_time_to_first_token_seconds_count",
            "ascendra_inter_token_gap_seconds_bucket",
            'ascendra_backend_inflight{backend="a"} 0.0',
            'ascendra_backend_healthy{backend="b"} 1.0',
            "ascendra_proxy_inflight_requests 0.0",
            "ascendra_decisions_total",
        ]:
            assert needle in text, needle
        assert "vllm:" not in text and "python_gc" not in text


async def test_health_ready_models(make_rig: RigFactory) -> None:
    a, b = FakeBackend("a"), FakeBackend("b", model="other")
    async with make_rig([a, b]) as r:
        assert (await r.session.get(r.url + "/health")).status == 200
        ready = await r.session.get(r.url + "/ready")
        assert ready.status == 200 and (await ready.json())["healthy_backends"] == 2
        models = await (await r.session.get(r.url + "/v1/models")).json()
        assert [m["id"] for m in models["data"]] == [MODEL, "other"]
        assert models["object"] == "list"
