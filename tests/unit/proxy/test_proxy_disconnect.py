"""A client that goes away aborts the upstream request at once, even mid-prefill."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until

STREAM = {"model": MODEL, "prompt": "x", "stream": True}


@pytest.mark.parametrize("stream", [True, False])
async def test_disconnect_during_prefill_aborts_upstream(
    make_rig: RigFactory, stream: bool
) -> None:
    fake = FakeBackend("a", script=Script(first_delay_s=30))
    async with make_rig([fake]) as r:
        task = asyncio.create_task(r.post("/v1/completions", {**STREAM, "stream": stream}))
        await wait_until(lambda: fake.running == 1)
        task.cancel()  # the client closes its connection; no byte is flowing either way
        took = await wait_until(lambda: fake.running == 0)
        assert took < 0.5 and fake.cancelled == 1
        await wait_until(lambda: not r.gateway.flights)
        assert r.gateway.telemetry.requests == {(MODEL, "client_disconnected"): 1}
        backend = r.gateway.backends.get("a")
        assert backend is not None and backend.inflight == 0 and backend.queued_prompt_tokens == 0


async def test_disconnect_mid_stream_aborts_upstream(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=1000, gap_s=0.01))
    async with make_rig([fake]) as r:
        resp = await r.post("/v1/completions", STREAM)
        await resp.content.readline()
        resp.close()
        took = await wait_until(lambda: fake.running == 0)
        assert took < 0.5
        await wait_until(lambda: not r.gateway.flights)
        assert r.gateway.telemetry.requests == {(MODEL, "client_disconnected"): 1}


async def test_sglang_abort_request_is_called_with_the_rid(make_rig: RigFactory) -> None:
    fake = FakeBackend("s", engine="sglang", script=Script(first_delay_s=30))
    async with make_rig([fake]) as r:
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: fake.running == 1)
        task.cancel()
        await wait_until(lambda: fake.aborted_rids != [])
        assert fake.aborted_rids == [fake.bodies[0]["rid"]]
        assert fake.bodies[0]["rid"].startswith("req-")


async def test_completed_sglang_stream_is_not_aborted(make_rig: RigFactory) -> None:
    fake = FakeBackend("s", engine="sglang")
    async with make_rig([fake]) as r:
        async with r.session.post(r.url + "/v1/completions", json=STREAM) as resp:
            await resp.read()
        await asyncio.sleep(0.05)
        assert fake.aborted_rids == []


async def test_proxy_shutdown_with_streams_open_does_not_hang(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=10_000, gap_s=0.01))
    async with make_rig([fake]) as r:
        resp = await r.post("/v1/completions", STREAM)
        await resp.content.readline()
        await asyncio.wait_for(r.runner.cleanup(), timeout=5)
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
            await asyncio.wait_for(resp.read(), timeout=2)
