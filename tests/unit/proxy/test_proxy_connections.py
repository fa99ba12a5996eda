"""Connection hygiene: slow or idle clients are dropped on their timeouts, connections above
the cap are refused with a JSON 503, and everyone else keeps being served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import resource

import pytest
from fake_backend import FakeBackend
from proxy_rig import MODEL, RigFactory, wait_until
from raw_http import assert_openai_error, parse_response

from ascendra_proxy.config import ConnectionsConfig
from ascendra_proxy.proxy.connections import GuardedTCPSite, open_file_warning

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
SLOW_CONNECTIONS = 1000


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def guard_of(r: object) -> object:
    sites = [s for s in r.runner.sites if isinstance(s, GuardedTCPSite)]  # type: ignore[attr-defined]
    assert len(sites) == 1
    return sites[0].guard


async def read_until_closed(reader: asyncio.StreamReader, within_s: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``within_s``).
    A close with our unread bytes in its buffer is a reset: what arrived before it counts."""
    got = b""
    async with asyncio.timeout(within_s):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                got += chunk
    return got


async def test_trickled_headers_get_408_and_are_dropped(make_rig: RigFactory) -> None:
    conn = {"header_timeout_s": 0.5, "idle_timeout_s": 30}
    async with make_rig([FakeBackend("a")], connections=conn) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(r.url))
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(1000):  # never finishes its headers
                    writer.write(b"X-%d: y\r\n" % i)
                    await asyncio.sleep(0.05)

        dripping = asyncio.create_task(trickle())
        got = await read_until_closed(reader)
        dripping.cancel()
        if got:  # the 408 may be lost to the reset a close with unread bytes causes
            assert_openai_error(parse_response(got), 408)
        assert guard_of(r).counts.dropped["header_timeout"] == 1  # type: ignore[attr-defined]
        writer.close()


async def test_a_silent_connection_is_dropped_after_the_header_timeout(
    make_rig: RigFactory,
) -> None:
    conn = {"header_timeout_s": 0.5, "idle_timeout_s": 30}
    async with make_rig([FakeBackend("a")], connections=conn) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(r.url))
        got = await read_until_closed(reader)
        assert_openai_error(parse_response(got), 408)
        writer.close()


async def test_a_body_that_never_completes_gets_408(make_rig: RigFactory) -> None:
    conn = {"body_timeout_s": 0.5}
    async with make_rig([FakeBackend("a")], connections=conn) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(r.url))
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        got = await read_until_closed(reader)
        err = assert_openai_error(parse_response(got), 408)
        assert err["code"] == "body_timeout"
        writer.close()
        assert r.gateway.flights == {}


async def test_an_idle_keep_alive_connection_is_closed(make_rig: RigFactory) -> None:
    conn = {"idle_timeout_s": 0.5, "header_timeout_s": 30}
    async with make_rig([FakeBackend("a")], connections=conn) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(r.url))
        writer.write(HEALTH)
        got = await read_until_closed(reader)  # the answer, then the close once idle
        resp = parse_response(got)
        assert resp is not None and resp.status == 200
        writer.close()


async def test_connections_above_the_cap_get_503_and_the_rest_are_served(
    make_rig: RigFactory,
) -> None:
    conn = {"max_connections": 5, "header_timeout_s": 30, "idle_timeout_s": 30}
    async with make_rig([FakeBackend("a")], connections=conn) as r:
        guard = guard_of(r)
        port = port_of(r.url)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await wait_until(lambda: guard.counts.open == 5)  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEALTH)
        refused = parse_response(await read_until_closed(reader))
        assert_openai_error(refused, 503)
        assert refused is not None and refused.headers["retry-after"] == "1"
        assert guard.counts.dropped["too_many_connections"] == 1  # type: ignore[attr-defined]
        writer.close()
        held[0][0].feed_eof()
        held[0][1].close()
        await wait_until(lambda: guard.counts.open == 4)  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEALTH)
        ok = parse_response(await reader.read(65536))
        assert ok is not None and ok.status == 200
        writer.close()
        for _, w in held[1:]:
            w.close()


def allow_open_files(wanted: int) -> int:
    """Raise the soft open-file limit toward ``wanted``; how many slow clients then fit
    (each costs two descriptors here: the client's socket and the proxy's)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return min(SLOW_CONNECTIONS, (soft - 256) // 2)


async def test_a_thousand_slowloris_clients_are_dropped_while_others_are_served(
    make_rig: RigFactory,
) -> None:
    count = allow_open_files(2 * SLOW_CONNECTIONS + 512)
    assert count >= SLOW_CONNECTIONS // 2, "open-file limit too low for this test"
    conn = {"header_timeout_s": 2.0, "idle_timeout_s": 30, "max_connections": 4 * count}
    async with make_rig([FakeBackend("a")], connections=conn) as r:
        guard, port = guard_of(r), port_of(r.url)
        slow = []
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            slow.append((reader, writer))

        async def drip() -> None:
            for i in range(100):  # a header line each, every 0.2 s: never complete
                for _, w in slow:
                    if not w.is_closing():
                        w.write(b"X-%d: y\r\n" % i)
                await asyncio.sleep(0.2)

        dripping = asyncio.create_task(drip())
        served = 0
        body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 120  # a bound for a loaded machine, not the expectation
        while guard.counts.dropped["header_timeout"] < count:  # type: ignore[attr-defined]
            assert loop.time() < give_up, (
                f"{guard.counts.dropped['header_timeout']} of {count} dropped"
            )  # type: ignore[attr-defined]
            resp = await r.post("/v1/completions", body)
            assert resp.status == 200, await resp.text()
            await resp.read()
            served += 1
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*(read_until_closed(rd, 60) for rd, _ in slow))
        dripping.cancel()
        for _, w in slow:
            w.close()
        assert all(not got or b" 408 " in got.split(b"\r\n", 1)[0] for got in results)
        assert guard.counts.dropped["header_timeout"] == count  # type: ignore[attr-defined]
        assert served >= 1
        metrics = await (await r.session.get(r.url + "/metrics")).text()
        assert f'ascendra_dropped_connections_total{{reason="header_timeout"}} {count}.0' in metrics


def test_a_cap_above_the_open_file_limit_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    warning = open_file_warning(ConnectionsConfig(max_connections=4096))
    assert warning is not None and "1024" in warning and "4352" in warning
    assert open_file_warning(ConnectionsConfig(max_connections=700)) is None
