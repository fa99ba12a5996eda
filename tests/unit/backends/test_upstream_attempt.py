"""Mapping of upstream failures onto the project's exception tree, at the attempt boundary."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ascendra_proxy.backends import adapter_for
from ascendra_proxy.backends import errors as E
from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.backends.upstream import Budgets, UpstreamAttempt

BODY = {"model": "m", "prompt": "x", "stream": True}


async def status(request: web.Request) -> web.StreamResponse:
    code = int(request.match_info["code"])
    return web.json_response({"error": {"message": "no", "code": code}}, status=code)


async def slow_headers(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response()


async def silent_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"data: {}\n\n")
    await asyncio.sleep(5)
    return resp


async def hang_up(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"data: {}\n\n")
    assert request.transport is not None
    request.transport.close()
    return resp


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/s{code}/v1/completions", status)
    app.router.add_post("/slow/v1/completions", slow_headers)
    app.router.add_post("/silent/v1/completions", silent_stream)
    app.router.add_post("/hangup/v1/completions", hang_up)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def attempt(
    session: aiohttp.ClientSession,
    base: str,
    budgets: Budgets | None = None,
) -> UpstreamAttempt:
    req = adapter_for("vllm").prepare(Endpoint.COMPLETIONS, BODY, "r1")
    return UpstreamAttempt("b", base, session, req, {}, budgets or Budgets(5, 5, 30))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_refused(session: aiohttp.ClientSession) -> None:
    with pytest.raises(E.ConnectFailed):
        await attempt(session, f"http://127.0.0.1:{free_port()}").open()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (500, E.UpstreamServerError),
        (503, E.UpstreamServerError),
        (429, E.UpstreamServerError),
        (400, E.UpstreamRejected),
        (404, E.UpstreamRejected),
    ],
)
async def test_status_mapping(
    server: str, session: aiohttp.ClientSession, code: int, kind: type[E.UpstreamError]
) -> None:
    with pytest.raises(kind) as info:
        await attempt(session, f"{server}/s{code}").open()
    if isinstance(info.value, E.UpstreamRejected):
        assert info.value.status == code and b'"no"' in info.value.body
        assert info.value.content_type.startswith("application/json")
    assert isinstance(info.value, E.UpstreamUnavailable) == (code >= 500 or code == 429)


async def test_first_byte_timeout_while_waiting_for_headers(
    server: str, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(E.FirstByteTimeout):
        await attempt(session, f"{server}/slow", Budgets(0.2, 5, 30)).open()


async def test_idle_timeout_mid_stream(server: str, session: aiohttp.ClientSession) -> None:
    a = attempt(session, f"{server}/silent", Budgets(5, 0.2, 30))
    await a.open()
    loop = asyncio.get_running_loop()
    a.touch(loop.time())
    assert await a.read() == b"data: {}\n\n"
    t0 = loop.time()
    with pytest.raises(E.StreamIdleTimeout):
        await a.read()
    assert loop.time() - t0 < 1.0


async def test_total_timeout(server: str, session: aiohttp.ClientSession) -> None:
    a = attempt(session, f"{server}/silent", Budgets(5, 5, 0.3))
    await a.open()
    a.touch(asyncio.get_running_loop().time())
    await a.read()
    with pytest.raises(E.StreamTotalTimeout):
        await a.read()


async def test_connection_drop_is_interrupted(server: str, session: aiohttp.ClientSession) -> None:
    a = attempt(session, f"{server}/hangup")
    await a.open()
    with pytest.raises(E.StreamInterrupted):
        while await a.read():
            pass
