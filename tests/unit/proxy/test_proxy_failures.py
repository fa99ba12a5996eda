"""Backend failures: retries before the first byte, in-stream errors after it, pass-through."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from fake_backend import FakeBackend, Script, serve_fake
from proxy_rig import MODEL, RigFactory, config_for
from sse_client import read_events, text_of

from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.proxy.app import start_server
from ascendra_proxy.proxy.keys import GATEWAY

STREAM = {"model": MODEL, "prompt": "x", "stream": True}


def dead_backend(name: str) -> FakeBackend:
    """A backend whose URL refuses connections (a port nothing listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return FakeBackend(name, url=f"http://127.0.0.1:{port}")


PRE_FIRST_BYTE_FAULTS = [
    (Script(status=500), True),
    (Script(status=503), True),
    (Script(status=429), True),
    (Script(error_after=0, error_code=500), True),
    (Script(die_after=0), True),
    (Script(status=500), False),
    (Script(status=503), False),
    (Script(status=429), False),
]


@pytest.mark.parametrize(("script", "stream"), PRE_FIRST_BYTE_FAULTS)
async def test_failure_before_first_byte_is_retried_elsewhere(
    make_rig: RigFactory, script: Script, stream: bool
) -> None:
    bad, good = FakeBackend("bad", script=script), FakeBackend("good")
    async with make_rig([bad, good], policy={"type": "round_robin"}) as r:
        for _ in range(2):  # round robin: at least one request meets "bad" first
            resp = await r.post("/v1/completions", {**STREAM, "stream": stream})
            assert resp.status == 200
            if stream:
                events, done = await read_events(resp)
                assert done and text_of(events) == " t100 t101 t102 t103 t104"
            else:
                assert (await resp.json())["usage"]["completion_tokens"] == 5
        tel = r.gateway.telemetry
        failures = sum(n for (b, _), n in tel.upstream_errors.items() if b == "bad")
        assert failures == bad.started >= 1 and tel.retries["bad"] == failures
        assert tel.requests == {(MODEL, "completed"): 2}
        assert good.started == 2


async def test_connect_refused_is_retried() -> None:
    dead, good = dead_backend("dead"), FakeBackend("good")
    async with serve_fake(good):
        runner, addrs = await start_server(config_for([dead, good]), "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as s:
                url = f"http://{addrs[0][0]}:{addrs[0][1]}/v1/completions"
                for _ in range(3):
                    async with s.post(url, json=STREAM) as resp:
                        events, done = await read_events(resp)
                        assert done and len(events) == 5
            errors = runner.app[GATEWAY].telemetry.upstream_errors
            assert set(errors) == {("dead", "connect_failed")}
        finally:
            await runner.cleanup()


async def test_upstream_4xx_is_passed_through_unchanged_and_not_retried(
    make_rig: RigFactory,
) -> None:
    a, b = FakeBackend("a", script=Script(status=400)), FakeBackend("b", script=Script(status=400))
    async with make_rig([a, b]) as r:
        resp = await r.post("/v1/completions", STREAM)
        assert resp.status == 400
        assert await resp.json() == {
            "error": {"message": "fake 400", "type": "X", "param": None, "code": 400}
        }
        assert a.started + b.started == 1
        assert r.gateway.telemetry.requests == {(MODEL, "client_error"): 1}


async def test_in_stream_client_error_before_first_token_is_passed_through(
    make_rig: RigFactory,
) -> None:
    a = FakeBackend("a", script=Script(error_after=0, error_code=400))
    b = FakeBackend("b", script=Script(error_after=0, error_code=400))
    async with make_rig([a, b]) as r:
        resp = await r.post("/v1/completions", STREAM)
        assert resp.status == 200
        events, done = await read_events(resp)
        assert done and events == [
            {"error": {"message": "engine exploded", "type": "Err", "param": None, "code": 400}}
        ]
        assert a.started + b.started == 1


async def test_every_backend_failing_gives_502(make_rig: RigFactory) -> None:
    fakes = [FakeBackend(n, script=Script(status=500)) for n in ("a", "b")]
    async with make_rig(fakes) as r:
        resp = await r.post("/v1/completions", STREAM)
        assert resp.status == 502
        err = (await resp.json())["error"]
        assert err["type"] == "upstream_error" and "HTTP 500" in err["message"]
        assert [f.started for f in fakes] == [1, 1]
        assert r.gateway.telemetry.requests == {(MODEL, "backend_failed"): 1}


@pytest.mark.parametrize(
    "script", [Script(tokens=6, die_after=3), Script(tokens=6, error_after=3, error_code=500)]
)
async def test_failure_after_first_byte_is_an_in_stream_error(
    make_rig: RigFactory, script: Script
) -> None:
    a = FakeBackend("a", script=script)
    async with make_rig([a]) as r:  # nowhere to continue
        resp = await r.post("/v1/completions", STREAM)
        assert resp.status == 200
        events, done = await read_events(resp)
        assert done, "a failed stream still ends with [DONE]"
        assert text_of(events[:-1]) == " t100 t101 t102"
        assert set(events[-1]) == {"error"}
        assert set(events[-1]["error"]) == {"message", "type", "param", "code"}
        assert a.started == 1, "no silent duplicate after the first byte"
        assert r.gateway.telemetry.requests == {(MODEL, "backend_failed"): 1}


async def test_failure_after_first_byte_resumes_on_another_backend(make_rig: RigFactory) -> None:
    a = FakeBackend("a", script=Script(tokens=6, die_after=3))
    b = FakeBackend("b", script=Script(tokens=2))
    async with make_rig([a, b]) as r:
        r.gateway.policy.route = _prefer_a  # type: ignore[method-assign,assignment]
        resp = await r.post("/v1/completions", {**STREAM, "max_tokens": 5})
        events, done = await read_events(resp)
        assert done and "error" not in events[-1]
        # the fake is no real continuation (its ids restart at 100), but the plumbing is exact
        assert text_of(events) == " t100 t101 t102 t100 t101"
        (cont,) = b.bodies
        assert cont["prompt"] == [1, 2, 3, 100, 101, 102] and cont["max_tokens"] == 2
        assert r.gateway.telemetry.migrations == {"failover": 1}
        assert r.gateway.telemetry.requests == {(MODEL, "completed"): 1}


def _prefer_a(state: Any, snaps: Any, now: float, exclude: frozenset[str]) -> Dispatch | Reject:
    for name in ("a", "b"):
        if name not in exclude:
            return Dispatch(name, "test")
    return Reject(503, "no_backend", "none left", "test")


async def test_first_byte_timeout_retries_elsewhere(make_rig: RigFactory) -> None:
    # a budget the fast backend meets even on a loaded machine, far below the slow one's delay
    slow = FakeBackend("slow", script=Script(first_delay_s=30))
    fast = FakeBackend("fast")
    async with make_rig([slow, fast], timeouts={"first_byte_s": 1.5, "idle_s": 5}) as r:
        for _ in range(2):
            events, done = await read_events(await r.post("/v1/completions", STREAM))
            assert done and len(events) == 5
        errors = r.gateway.telemetry.upstream_errors
        assert errors == {("slow", "first_byte_timeout"): slow.started} and slow.started >= 1


async def test_idle_timeout_mid_stream_ends_the_stream(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=3, gap_s=2))
    async with make_rig([fake], timeouts={"first_byte_s": 5, "idle_s": 0.3}) as r:
        events, done = await read_events(await r.post("/v1/completions", STREAM))
        assert done and text_of(events[:-1]) == " t100" and "error" in events[-1]
        assert events[-1]["error"]["code"] == "idle_timeout"
        assert r.gateway.telemetry.requests == {(MODEL, "timed_out"): 1}


async def test_open_circuit_skips_the_backend(make_rig: RigFactory) -> None:
    bad, good = FakeBackend("bad", script=Script(status=500)), FakeBackend("good")
    async with make_rig(
        [bad, good], health={"interval_s": 60, "failure_threshold": 2, "cooldown_s": 60}
    ) as r:
        for _ in range(8):
            resp = await r.post("/v1/completions", {**STREAM, "stream": False})
            assert resp.status == 200
        assert bad.started == 2, "after two failures the breaker keeps traffic away"
        now = r.gateway.clock()
        assert not r.gateway.backends.get("bad").breaker.available(now)  # type: ignore[union-attr]


async def test_no_healthy_backend_is_503_with_retry_after(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(status=500))
    async with make_rig(
        [fake], health={"interval_s": 60, "failure_threshold": 1, "cooldown_s": 60}
    ) as r:
        assert (await r.post("/v1/completions", STREAM)).status == 502
        resp = await r.post("/v1/completions", STREAM)
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "no_healthy_backend"
        ready = await r.session.get(r.url + "/ready")
        assert ready.status == 503


async def test_a_continuation_may_wait_for_room_longer_than_first_byte_s(
    make_rig: RigFactory,
) -> None:
    a = FakeBackend("a", script=Script(tokens=6, die_after=3, gap_s=0.15))
    b = FakeBackend("b", script=Script(tokens=2))
    holds: list[float] = []

    def route(state: Any, snaps: Any, now: float, exclude: frozenset[str]) -> Any:
        if "a" not in exclude:
            return Dispatch("a", "test")
        if len(holds) < 3:  # no room at first: the continuation is held a moment
            holds.append(now)
            return Hold("no_room")
        return Dispatch("b", "test")

    async with make_rig([a, b], timeouts={"first_byte_s": 0.3, "idle_s": 5}) as r:
        r.gateway.policy.route = route  # type: ignore[method-assign,assignment]
        resp = await r.post("/v1/completions", {**STREAM, "max_tokens": 5})
        events, done = await read_events(resp)
        assert done and "error" not in events[-1] and len(holds) == 3
        assert r.gateway.telemetry.migrations == {"failover": 1}
