"""The Kubernetes Lease elector against a fake API server (optimistic concurrency, 404/409)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ascendra_proxy.scaleout.k8s_lease import KubernetesLeaseElector

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
LIMIT_S = 30.0


class FakeApi:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.conflicts = 0

    def _store(self, body: dict[str, Any]) -> web.Response:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        return web.json_response(body)

    async def get(self, _r: web.Request) -> web.Response:
        return web.json_response(self.lease) if self.lease else web.Response(status=404)

    async def post(self, r: web.Request) -> web.Response:
        if self.lease is not None:
            self.conflicts += 1
            return web.Response(status=409)
        return self._store(await r.json())

    async def put(self, r: web.Request) -> web.Response:
        body = await r.json()
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            self.conflicts += 1
            return web.Response(status=409)
        return self._store(body)

    def take(self, holder: str) -> None:
        """Another writer takes the lease (as a partitioned leader would see it)."""
        assert self.lease is not None
        self.lease["spec"]["holderIdentity"] = holder
        self.version += 1
        self.lease["metadata"]["resourceVersion"] = str(self.version)


@contextlib.asynccontextmanager
async def fake_api() -> AsyncIterator[tuple[FakeApi, str]]:
    api = FakeApi()
    app = web.Application()
    app.router.add_get(PATH + "/lead", api.get)
    app.router.add_post(PATH, api.post)
    app.router.add_put(PATH + "/lead", api.put)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield api, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Candidate:
    def __init__(self, url: str, identity: str) -> None:
        self.elector = KubernetesLeaseElector(url, "ns", "lead", identity, ttl_s=1.0, retry_s=0.05)
        self.epochs: list[int] = []
        self.lost = 0
        self.task = asyncio.create_task(self.elector.run(self.epochs.append, self._lost))

    def _lost(self) -> None:
        self.lost += 1

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def until(check: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT_S
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_one_leads_the_standby_takes_over_with_a_higher_epoch() -> None:
    async with fake_api() as (api, url):
        a = Candidate(url, "a")
        await until(lambda: a.epochs == [1])
        b = Candidate(url, "b")
        for _ in range(10):  # a renews: b waits (counted in retries, not seconds)
            version = api.version
            await until(lambda v=version: api.version > v)
        assert not b.epochs and api.lease["spec"]["holderIdentity"] == "a"  # type: ignore[index]
        await a.stop()  # the leader dies without a word
        await until(lambda: b.epochs == [2])
        assert api.lease["spec"]["leaseTransitions"] == 1  # type: ignore[index]
        await b.stop()


async def test_a_leader_that_finds_another_holder_steps_down() -> None:
    async with fake_api() as (api, url):
        a = Candidate(url, "a")
        await until(lambda: a.epochs == [1])
        api.take("c")
        await until(lambda: a.lost == 1)
        assert not a.elector.leading
        await a.stop()


async def test_a_clean_shutdown_hands_over_at_once() -> None:
    async with fake_api() as (api, url):
        a = Candidate(url, "a")
        await until(lambda: a.epochs == [1])
        b = Candidate(url, "b")
        await a.stop()
        await a.elector.resign()
        assert api.lease["spec"]["holderIdentity"] == ""  # type: ignore[index]
        await until(lambda: b.epochs == [2])
        await b.stop()
