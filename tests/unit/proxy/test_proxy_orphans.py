"""No orphan upstream: whenever the caller of an attempt's ``open`` goes away, even in the very
turn the engine's response headers arrive, the engine's request is closed (and, for SGLang,
aborted by id) instead of generating to its end for nobody.

The race is made deterministic with a session stand-in that cancels the handler task at the
moment the upstream answer exists: either while the post task is still running (the cancel
lands on the post task) or right after it finished and before the handler resumed (the
handler drops the finished task's response).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import aiohttp
import pytest
from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until

from ascendra_proxy.backends.upstream import UpstreamAttempt

STREAM = {"model": MODEL, "prompt": "x", "stream": True}
Moment = Literal["in_post", "after_post"]
LONG = Script(tokens=100_000, gap_s=0.01)  # ~17 minutes of tokens if nobody closes it


class CancelAtHeaders:
    """Stands in for a backend's session: generation posts cancel their caller when the
    answer's headers arrive; everything else (SGLang's abort call) passes through."""

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


def record_callers(monkeypatch: pytest.MonkeyPatch, stand_in: CancelAtHeaders) -> None:
    real_open = UpstreamAttempt.open

    async def open_recorded(self: UpstreamAttempt) -> None:
        stand_in.callers.append(asyncio.current_task())  # type: ignore[arg-type]
        await real_open(self)

    monkeypatch.setattr(UpstreamAttempt, "open", open_recorded)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("moment", ["in_post", "after_post"])
async def test_caller_cancelled_as_headers_arrive_closes_upstream(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch, engine: str, moment: Moment
) -> None:
    fake = FakeBackend("a", engine=engine, script=LONG)
    async with make_rig([fake]) as r:
        backend = r.gateway.backends.get("a")
        assert backend is not None
        stand_in = CancelAtHeaders(backend.session, moment)
        backend.session = stand_in  # type: ignore[assignment]
        record_callers(monkeypatch, stand_in)
        try:
            with pytest.raises(aiohttp.ClientError):
                async with r.session.post(r.url + "/v1/completions", json=STREAM) as resp:
                    await resp.read()
        finally:
            backend.session = stand_in.real
        assert stand_in.fired == 1 and fake.started == 1
        # the engine's own count, not the proxy's: the request stops long before its end
        await wait_until(lambda: fake.running == 0, within_s=20)
        await wait_until(lambda: not r.gateway.flights)
        assert r.gateway.telemetry.requests == {(MODEL, "client_disconnected"): 1}
        assert backend.inflight == 0
        if engine == "sglang":
            await wait_until(lambda: fake.aborted_rids == [fake.bodies[0]["rid"]])
