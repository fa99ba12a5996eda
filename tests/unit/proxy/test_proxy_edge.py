"""Bad input and limits: OpenAI-shaped 4xx errors, never a 5xx, never a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]

BAD_BODIES: list[tuple[str, Any, int, str | None]] = [
    (COMP, b"{not json", 400, None),
    (COMP, b"[1, 2]", 400, None),
    (COMP, b"", 400, None),
    (COMP, {"model": 7, "prompt": "x"}, 400, "body.model"),
    (COMP, {"model": "nope", "prompt": "x"}, 404, "model"),
    (COMP, {"model": MODEL}, 400, "prompt"),
    (COMP, {"model": MODEL, "prompt": {"a": 1}}, 400, "prompt"),
    (COMP, {"model": MODEL, "prompt": []}, 400, None),
    (COMP, {"model": MODEL, "prompt": [1, "x"]}, 400, "prompt"),
    (COMP, {"model": MODEL, "prompt": "x", "stream": "yes"}, 400, "body.stream"),
    (COMP, {"model": MODEL, "prompt": "x", "max_tokens": "5"}, 400, "body.max_tokens"),
    (COMP, {"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    (COMP, {"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    (COMP, {"model": MODEL, "prompt": "x", "max_tokens": True}, 400, "body.max_tokens"),
    (COMP, {"model": MODEL, "prompt": "x", "n": 0}, 400, None),
    (
        COMP,
        {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}},
        400,
        "stream_options",
    ),
    (
        COMP,
        {"model": MODEL, "prompt": "x", "stream": True, "stream_options": []},
        400,
        "body.stream_options",
    ),
    (CHAT, {"model": MODEL}, 400, "body.messages"),
    (CHAT, {"model": MODEL, "messages": "hi"}, 400, "body.messages"),
    (CHAT, {"model": MODEL, "messages": []}, 400, None),
    (CHAT, {"model": MODEL, "messages": [{"content": "no role"}]}, 400, "body.messages.0.role"),
    (
        CHAT,
        {"model": MODEL, "messages": MSG, "max_completion_tokens": 1.5},
        400,
        "body.max_completion_tokens",
    ),
]


def assert_openai_error(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD_BODIES)
async def test_bad_input_matrix(
    make_rig: RigFactory, path: str, body: Any, status: int, param: str | None
) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        resp = await r.session.post(r.url + path, **kw)
        assert resp.status == status
        err = assert_openai_error(await resp.json())
        assert err["param"] == param
        assert r.fakes[0].started == 0, "bad input never reaches a backend"


async def test_oversized_body_is_413(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], limits={"max_body_bytes": 1000}) as r:
        resp = await r.post(COMP, {"model": MODEL, "prompt": "x" * 2000})
        assert resp.status == 413
        assert assert_openai_error(await resp.json())["code"] == "body_too_large"

        async def chunked() -> Any:
            yield b'{"model": "m", "prompt": "'
            yield b"x" * 2000
            yield b'"}'

        resp = await r.session.post(r.url + COMP, data=chunked())
        assert resp.status == 413
        assert_openai_error(await resp.json())


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v1/nothing", 404), ("GET", COMP, 405)]
)
async def test_unknown_routes_are_openai_errors(
    make_rig: RigFactory, method: str, path: str, status: int
) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.session.request(method, r.url + path)
        assert resp.status == status
        assert_openai_error(await resp.json())


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"x-slo-ttft-ms": "fast"}, "invalid_slo"),
        ({"x-slo-tpot-ms": "-3"}, "invalid_slo"),
        ({"x-slo-class": "platinum"}, "invalid_slo"),
    ],
)
async def test_bad_slo_headers(make_rig: RigFactory, headers: dict[str, str], code: str) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.post(COMP, {"model": MODEL, "prompt": "x"}, headers=headers)
        assert resp.status == 400
        assert assert_openai_error(await resp.json())["code"] == code


async def test_slo_headers_and_classes_reach_the_request_state(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(first_delay_s=0.3))
    slo = {
        "default": {"ttft_ms": 1000, "tpot_ms": 100},
        "classes": {"gold": {"ttft_ms": 200, "tpot_ms": 20}},
    }
    tight_ok = {"default_slo_access": {"min_ttft_ms": 1, "min_tpot_ms": 1}}
    async with make_rig([fake], slo=slo, auth=tight_ok) as r:
        body = {"model": MODEL, "prompt": "x", "stream": True}
        cases = [
            ({}, (1.0, 0.1)),
            ({"x-slo-class": "gold"}, (0.2, 0.02)),
            ({"x-slo-class": "gold", "x-slo-tpot-ms": "50"}, (0.2, 0.05)),
            ({"x-slo-ttft-ms": "300"}, (0.3, 0.1)),
        ]
        for headers, expected in cases:
            task = asyncio.create_task(r.post(COMP, body, headers=headers))
            await wait_until(lambda: bool(r.gateway.flights))
            (flight,) = r.gateway.flights.values()
            assert (flight.state.slo.ttft_s, flight.state.slo.tbt_s) == pytest.approx(expected)
            await read_events(await task)


async def test_queue_limit_is_429_and_held_requests_run_when_room_frees(
    make_rig: RigFactory,
) -> None:
    fake = FakeBackend("a", script=Script(tokens=3, first_delay_s=0.3))
    limits = {"max_inflight_per_backend": 1, "max_queued_requests": 1}
    async with make_rig([fake], limits=limits) as r:
        body = {"model": MODEL, "prompt": "x", "stream": True}
        first = asyncio.create_task(r.post(COMP, body))
        await wait_until(lambda: fake.running >= 1)
        second = asyncio.create_task(r.post(COMP, body))
        await wait_until(lambda: r.gateway.held >= 1)
        third = await r.post(COMP, body)
        assert third.status == 429 and third.headers["Retry-After"] == "1"
        assert assert_openai_error(await third.json())["code"] == "queue_full"
        for task in (first, second):
            events, done = await read_events(await task)
            assert done and len(events) == 3
        assert fake.started == 2 and r.gateway.held == 0


async def test_held_request_times_out_with_504(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=20, gap_s=0.05))  # holds its slot ~1 s
    async with make_rig(
        [fake], limits={"max_inflight_per_backend": 1}, timeouts={"first_byte_s": 0.3, "idle_s": 5}
    ) as r:
        body = {"model": MODEL, "prompt": "x", "stream": True}
        first = asyncio.create_task(r.post(COMP, body))
        await wait_until(lambda: fake.running >= 1)
        second = await r.post(COMP, body)
        assert second.status == 504
        assert assert_openai_error(await second.json())["code"] == "queue_timeout"
        events, done = await read_events(await first)
        assert done and len(events) == 20
        assert r.gateway.telemetry.requests == {(MODEL, "timed_out"): 1, (MODEL, "completed"): 1}
