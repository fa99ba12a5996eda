"""No orphan on a real vLLM: clients that leave at any moment, including the very turn the
engine's response headers reach the proxy, leave nothing running in vLLM.

- **the race, made deterministic**: a stand-in for the backend's session cancels the proxy's
  handler exactly when vLLM's answer exists (while the post task still runs, and right
  after it finished); vLLM's own ``num_requests_running`` returns to 0 and its token count
  stops, although the request asked for more tokens than any test lasts;
- **a disconnect storm**: clients leave while connecting, as the headers arrive and
  mid-stream, with more of them than vLLM runs at once (some wait in its queue); afterwards
  vLLM runs and queues nothing and stops generating.

The state asserted is the engine's (its ``/metrics``), never the proxy's count: nothing
running or waiting and a token counter that stands still, well short of what an orphan
makes (run to its end, a request here makes all ``LONG_TOKENS``).  When vLLM last showed
work after the last client left is printed (``-s``); the waits have generous bounds (vLLM
updates its gauges only when it steps, seconds late on a starved CPU), so that time is
measured, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import httpx
import pytest
from proxy_helpers import CLIENT_KEY, Proxy, backend, proxy_config, running_proxy
from vllm_harness import LONG_TOKENS, VllmServer, metric, scrape, wait_metric

from ascendra_proxy.backends.upstream import UpstreamAttempt

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(900)]

MODEL = "tiny"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
GENERATED = "vllm:generation_tokens_total"
HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {
    "model": MODEL,
    "prompt": "The proxy",
    "max_tokens": LONG_TOKENS,
    "stream": True,
    "ignore_eos": True,
    "temperature": 0,
}
Moment = Literal["in_post", "after_post"]


@pytest.fixture
async def proxy(real_vllm: VllmServer) -> AsyncIterator[Proxy]:
    pool = {"name": "main", "role": "mixed", "backends": [backend(real_vllm, "vllm-a")]}
    async with running_proxy(proxy_config([pool], {"type": "round_robin"})) as p:
        yield p


class CancelAtHeaders:
    """Stands in for the backend's session: a generation post cancels its caller (the
    proxy's handler) when vLLM's answer headers arrive."""

    def __init__(self, real: aiohttp.ClientSession, moment: Moment) -> None:
        self.real = real
        self.moment = moment
        self.callers: list[asyncio.Task[Any]] = []
        self.fired = 0

    def post(self, url: str, **kw: Any) -> Any:
        if not self.callers:
            return self.real.post(url, **kw)
        return self._post_then_cancel(url, self.callers.pop(), **kw)

    async def _post_then_cancel(self, url: str, caller: asyncio.Task[Any], **kw: Any) -> Any:
        resp = await self.real.post(url, **kw)
        self.fired += 1
        if self.moment == "in_post":
            caller.cancel()
        else:
            asyncio.get_running_loop().call_soon(caller.cancel)
        return resp


QUIET_S = 1.5  # no running or waiting request and no new token for this long: vLLM is idle


async def quiet_after(
    http: httpx.AsyncClient, server: VllmServer, left: float
) -> tuple[float, float]:
    """Poll vLLM until it runs and queues nothing and its token count stops moving for
    ``QUIET_S`` (bounded generously); returns (seconds from ``left`` to its last sign of
    work, its token counter).  A gauge read before vLLM even registered a request says 0
    too, so the counter must stand still as well: an orphan keeps it moving."""
    deadline = time.monotonic() + 120
    last_work, tokens = left, -1.0
    while True:
        seen = await scrape(http, server.base_url)
        now = time.monotonic()
        busy = metric(seen, RUNNING) + metric(seen, WAITING) > 0
        if busy or metric(seen, GENERATED) != tokens:
            last_work, tokens = now, metric(seen, GENERATED)
        elif now - last_work >= QUIET_S:
            return max(0.0, last_work - left), tokens
        assert now < deadline, f"vLLM still busy 120 s after the last client left: {seen}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("moment", ["in_post", "after_post"])
async def test_handler_cancelled_as_vllm_answers_leaves_nothing_running(
    proxy: Proxy, real_vllm: VllmServer, monkeypatch: pytest.MonkeyPatch, moment: Moment
) -> None:
    http = proxy.http
    await wait_metric(http, real_vllm.base_url, RUNNING, lambda v: v == 0)
    start = metric(await scrape(http, real_vllm.base_url), GENERATED)
    runtime = proxy.gateway.backends.get("vllm-a")
    assert runtime is not None
    stand_in = CancelAtHeaders(runtime.session, moment)
    real_open = UpstreamAttempt.open

    async def open_recorded(self: UpstreamAttempt) -> None:
        stand_in.callers.append(asyncio.current_task())  # type: ignore[arg-type]
        await real_open(self)

    monkeypatch.setattr(UpstreamAttempt, "open", open_recorded)
    runtime.session = stand_in  # type: ignore[assignment]
    try:
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.ClientError):
                async with client.post(
                    proxy.url + "/v1/completions", json=BODY, headers=HEADERS
                ) as resp:
                    await resp.read()
        left = time.monotonic()
    finally:
        runtime.session = stand_in.real
    assert stand_in.fired == 1
    took, tokens = await quiet_after(http, real_vllm, left)
    made = tokens - start
    print(f"{moment}: vLLM's last work {took:.2f} s after the client left ({made:.0f} tokens)")
    assert made < LONG_TOKENS


async def storm_client(
    session: aiohttp.ClientSession, url: str, rng: random.Random, left: list[float]
) -> None:
    how = rng.choice(("while_connecting", "at_headers", "mid_stream"))
    if how == "while_connecting":
        task = asyncio.create_task(session.post(url, json=BODY, headers=HEADERS))
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            (await task).close()
    else:
        resp = await session.post(url, json=BODY, headers=HEADERS)
        if how == "mid_stream":
            for _ in range(rng.randint(1, 4)):
                await resp.content.readline()
        resp.close()
    left.append(time.monotonic())


@pytest.mark.parametrize("seed", [0, 1])
async def test_disconnect_storm_leaves_vllm_empty(
    proxy: Proxy, real_vllm: VllmServer, seed: int
) -> None:
    http = proxy.http
    await wait_metric(http, real_vllm.base_url, RUNNING, lambda v: v == 0)
    start = metric(await scrape(http, real_vllm.base_url), GENERATED)
    clients = 4 * real_vllm.options.max_num_seqs  # most wait in vLLM's queue
    rng = random.Random(seed)
    left: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        url = proxy.url + "/v1/completions"
        await asyncio.gather(*(storm_client(session, url, rng, left) for _ in range(clients)))
    took, tokens = await quiet_after(http, real_vllm, max(left))
    made = tokens - start
    print(f"seed {seed}: vLLM's last work {took:.2f} s after the last of {clients} left")
    assert made < LONG_TOKENS  # one orphan run to its end alone makes that many
