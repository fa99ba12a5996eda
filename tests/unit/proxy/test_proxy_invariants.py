"""Every admitted request ends exactly once, whatever mix of failures and disconnects."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp
from fake_backend import FakeBackend
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events

BACKEND_SCRIPTS: list[dict[str, Any]] = [
    {},
    {"tokens": 20, "gap_s": 0.005},
    {"die_after": 2},
    {"die_after": 0},
    {"error_after": 1, "error_code": 500},
    {"error_after": 0, "error_code": 503},
    {"error_after": 0, "error_code": 400},
    {"status": 500},
    {"status": 400},
    {"first_delay_s": 0.2},
    {"tokens": 9, "per_chunk": 4, "split_events": True},
]
CLIENT_MODES = ["read", "read", "read", "cancel_early", "close_mid"]


async def one_request(session: aiohttp.ClientSession, url: str, rng: random.Random) -> None:
    stream = rng.random() < 0.8
    body = {
        "model": MODEL,
        "prompt": "x",
        "stream": stream,
        "fake_script": rng.choice(BACKEND_SCRIPTS),
    }
    mode = rng.choice(CLIENT_MODES)
    task = asyncio.create_task(session.post(url, json=body))
    if mode == "cancel_early":
        await asyncio.sleep(rng.random() * 0.05)
        task.cancel()
        return
    try:
        resp = await task
    except aiohttp.ClientError:
        return
    if mode == "close_mid" and stream and resp.status == 200:
        await resp.content.readline()
        resp.close()
        return
    if stream and resp.status == 200:
        await read_events(resp)
    else:
        await resp.read()


async def test_every_admitted_request_ends_exactly_once(make_rig: RigFactory) -> None:
    fakes = [FakeBackend(n) for n in ("a", "b", "c")]
    async with make_rig(
        fakes, health={"interval_s": 60, "failure_threshold": 1000, "cooldown_s": 1}
    ) as r:
        gw = r.gateway
        admitted: list[str] = []
        ended: Counter[str] = Counter()
        real_admit, real_finish = gw.admit, gw.policy.on_finish

        def admit(*args: Any) -> Any:
            flight = real_admit(*args)
            admitted.append(flight.state.id)
            return flight

        def on_finish(req: Any, now: float) -> None:
            assert req.finished and req.outcome is not None
            ended[req.id] += 1
            real_finish(req, now)

        gw.admit = admit  # type: ignore[method-assign, assignment]
        gw.policy.on_finish = on_finish  # type: ignore[method-assign]
        rng = random.Random(1234)
        await asyncio.gather(
            *(one_request(r.session, r.url + "/v1/completions", rng) for _ in range(150)),
            return_exceptions=True,
        )
        await wait_until(lambda: not gw.flights and len(ended) == len(admitted), within_s=5)
        assert len(admitted) > 100
        assert set(ended) == set(admitted) and set(ended.values()) == {1}
        assert sum(gw.telemetry.requests.values()) == len(admitted)
        outcomes = {o for _, o in gw.telemetry.requests}
        assert {"completed", "client_disconnected", "backend_failed", "client_error"} <= outcomes
        for b in gw.backends:
            assert b.inflight == 0 and b.queued_prompt_tokens == 0
        assert gw.held == 0
        await asyncio.sleep(0.1)
        assert all(f.running == 0 for f in fakes), "no request left running upstream"
