"""A proxy (in-process, free port) in front of scriptable fake backends, for the proxy tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from fake_backend import FakeBackend, serve_fake

from ascendra_proxy.config import ProxyConfig, parse_config
from ascendra_proxy.proxy.app import start_server
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.keys import GATEWAY

MODEL = "m"


@dataclass
class Rig:
    url: str
    fakes: list[FakeBackend]
    runner: web.AppRunner
    session: aiohttp.ClientSession

    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY]

    async def post(self, path: str, body: Any, **kw: Any) -> aiohttp.ClientResponse:
        return await self.session.post(self.url + path, json=body, **kw)


def backend_entry(f: FakeBackend) -> dict[str, Any]:
    entry = {"url": f.url, "engine": f.engine, "model": f.model, "name": f.name}
    if f.api_key is not None:
        entry["api_key"] = f.api_key
    return entry


def config_for(fakes: list[FakeBackend], **overrides: Any) -> ProxyConfig:
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "pools": [
            {
                "name": "p",
                "role": "mixed",
                "backends": [backend_entry(f) for f in fakes],
            }
        ],
        "health": {"interval_s": 60, "failure_threshold": 3, "cooldown_s": 30},
        "scrape": {"interval_s": 0.05},
        "timeouts": {"first_byte_s": 5, "idle_s": 5, "total_s": 30},
    }
    data.update(overrides)
    return parse_config(data)


@contextlib.asynccontextmanager
async def rig(fakes: list[FakeBackend], **overrides: Any) -> AsyncIterator[Rig]:
    async with contextlib.AsyncExitStack() as stack:
        for f in fakes:
            await stack.enter_async_context(serve_fake(f))
        cfg = config_for(fakes, **overrides)
        runner, addrs = await start_server(cfg, "127.0.0.1", 0, shutdown_grace_s=0.5)
        stack.push_async_callback(runner.cleanup)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        host, port = addrs[0]
        yield Rig(f"http://{host}:{port}", fakes, runner, session)


async def wait_until(cond: Callable[[], bool], within_s: float = 3.0) -> float:
    """Poll ``cond`` until true; returns the seconds it took (fails the test on timeout)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        if loop.time() - t0 > within_s:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
    return loop.time() - t0


RigFactory = Callable[..., contextlib.AbstractAsyncContextManager[Rig]]
