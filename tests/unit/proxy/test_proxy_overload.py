"""Overload: held requests past their deadline are refused per their class (429 +
Retry-After, outcome ``shed``); the queue is bounded in requests and in prompt tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events

COMP = "/v1/completions"
SLO = {
    "default": {"ttft_ms": 1000, "tpot_ms": 100},
    "classes": {
        "batch": {"ttft_ms": 200, "tpot_ms": 100, "on_late": "refuse"},
        "patient": {"ttft_ms": 200, "tpot_ms": 100},
    },
}
BODY = {"model": MODEL, "prompt": "x", "stream": True}


def assert_openai_error(doc: Any) -> dict[str, Any]:
    assert set(doc) == {"error"}
    err = doc["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    return err  # type: ignore[no-any-return]


async def metrics_text(r: Any) -> str:
    async with r.session.get(r.url + "/metrics") as resp:
        return str(await resp.text())


async def test_a_held_request_past_its_deadline_is_shed_when_its_class_opted_in(
    make_rig: RigFactory,
) -> None:
    fake = FakeBackend("a", script=Script(tokens=40, gap_s=0.05))  # holds its slot ~2 s
    async with make_rig([fake], slo=SLO, limits={"max_inflight_per_backend": 1}) as r:
        first = asyncio.create_task(r.post(COMP, BODY))
        await wait_until(lambda: fake.running >= 1)
        late = await r.post(COMP, BODY, headers={"x-slo-class": "batch"})
        assert late.status == 429
        assert assert_openai_error(await late.json())["code"] == "deadline_unreachable"
        assert 1 <= int(late.headers["Retry-After"]) <= 60
        assert fake.started == 1  # never sent to an engine
        events, done = await read_events(await first)
        assert done and len(events) == 40
        text = await metrics_text(r)
        assert f'ascendra_requests_total{{model="{MODEL}",outcome="shed"}} 1.0' in text


async def test_a_class_that_did_not_opt_in_waits_for_room(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=10, gap_s=0.05))
    async with make_rig([fake], slo=SLO, limits={"max_inflight_per_backend": 1}) as r:
        first = asyncio.create_task(r.post(COMP, BODY))
        await wait_until(lambda: fake.running >= 1)
        patient = await r.post(COMP, BODY, headers={"x-slo-class": "patient"})
        assert patient.status == 200  # late, but served
        events, done = await read_events(patient)
        assert done and len(events) == 10
        await read_events(await first)


async def test_queue_full_answers_with_retry_after(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=3, first_delay_s=0.3))
    limits = {"max_inflight_per_backend": 1, "max_queued_requests": 0}
    async with make_rig([fake], limits=limits) as r:
        first = asyncio.create_task(r.post(COMP, BODY))
        await wait_until(lambda: fake.running >= 1)
        full = await r.post(COMP, BODY)
        assert full.status == 429
        assert assert_openai_error(await full.json())["code"] == "queue_full"
        assert full.headers["Retry-After"] == "1"
        await read_events(await first)


async def test_the_queue_is_bounded_in_prompt_tokens_too(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=3, first_delay_s=0.3))
    limits = {"max_inflight_per_backend": 1, "max_queued_prompt_tokens": 100}
    async with make_rig([fake], limits=limits) as r:
        first = asyncio.create_task(r.post(COMP, BODY))
        await wait_until(lambda: fake.running >= 1)
        small = asyncio.create_task(r.post(COMP, BODY))  # a short prompt fits
        await wait_until(lambda: r.gateway.held >= 1)
        big = await r.post(COMP, {**BODY, "prompt": "word " * 400})
        assert big.status == 429
        err = assert_openai_error(await big.json())
        assert err["code"] == "queue_full" and "prompt tokens" in err["message"]
        for task in (first, small):
            _, done = await read_events(await task)
            assert done
        assert r.gateway.held_prompt_tokens == 0
