"""Nothing leaks, nothing redirects: a client-facing 5xx names a backend by its configured name
only (never its address or the engine's own error text, which stay in the log), and no call
to a backend follows a redirect (a 3xx is that backend failing)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from fake_backend import FakeBackend, Script, serve_fake
from proxy_rig import MODEL, RigFactory
from sse_client import read_events
from test_proxy_failures import dead_backend

STREAM = {"model": MODEL, "prompt": "x", "stream": True}
SECRET_TEXT = "internal-engine-detail-7f3a"


def leaks(body: str, *fakes: FakeBackend) -> list[str]:
    found = [f.url for f in fakes if f.url.split("//")[1] in body]
    return found + [s for s in (SECRET_TEXT, "127.0.0.1", "http") if s in body]


async def secret_500(request: web.Request) -> web.Response:
    return web.Response(status=500, text=f"Traceback ... {SECRET_TEXT}")


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("stream", [True, False])
async def test_502_after_an_engine_5xx_names_the_backend_only(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", secret_500)
    async with serve_app(app) as url:
        fake = FakeBackend("engine-a", url=url)
        with caplog.at_level(logging.WARNING):
            async with make_rig([], pools=pools_of(fake)) as r:
                resp = await r.post("/v1/completions", {**STREAM, "stream": stream})
                body = await resp.text()
        assert resp.status == 502, body
        assert "'engine-a'" in body and "HTTP 500" in body
        assert leaks(body, fake) == []
        assert SECRET_TEXT in caplog.text  # the operator keeps the detail


def pools_of(*fakes: FakeBackend) -> list[dict[str, object]]:
    entries = [{"url": f.url, "engine": f.engine, "model": f.model, "name": f.name} for f in fakes]
    return [{"name": "p", "role": "mixed", "backends": entries}]


async def test_502_after_connect_failure_has_no_address(make_rig: RigFactory) -> None:
    dead = dead_backend("engine-a")
    async with make_rig([], pools=pools_of(dead)) as r:
        resp = await r.post("/v1/completions", STREAM)
        body = await resp.text()
    assert resp.status == 502 and "'engine-a'" in body
    assert leaks(body, dead) == []


async def test_mid_stream_failure_event_has_no_upstream_detail(make_rig: RigFactory) -> None:
    fake = FakeBackend("engine-a", script=Script(tokens=6, die_after=3))
    async with make_rig([fake]) as r:
        resp = await r.post("/v1/completions", STREAM)
        events, done = await read_events(resp)
    assert done and set(events[-1]) == {"error"}
    message = events[-1]["error"]["message"]
    assert "'engine-a'" in message and leaks(message, fake) == []


@pytest.fixture
async def redirector() -> AsyncIterator[tuple[str, FakeBackend]]:
    """A backend answering every path with 307 to another server (a fake engine)."""
    target = FakeBackend("target")
    async with serve_fake(target):

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target.url + request.path)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", redirect)
        async with serve_app(app) as url:
            yield url, target


async def test_upstream_redirect_is_a_backend_failure_not_followed(
    make_rig: RigFactory, redirector: tuple[str, FakeBackend]
) -> None:
    url, target = redirector
    engine = FakeBackend("engine-a", url=url)
    async with make_rig([], pools=pools_of(engine)) as r:
        for stream in (True, False):
            resp = await r.post("/v1/completions", {**STREAM, "stream": stream})
            body = await resp.text()
            assert resp.status == 502 and "HTTP 307" in body and leaks(body, engine) == []
        runtime = r.gateway.backends.get("engine-a")
        assert runtime is not None
        assert await runtime.monitor.probe_once() is False  # a 3xx health answer is a failure
        assert await runtime.monitor.scrape_once() is False
        assert runtime.monitor.load is None
    assert target.started == 0 and target.bodies == []
