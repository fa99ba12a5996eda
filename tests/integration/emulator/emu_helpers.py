"""Helpers for the emulator integration tests: raw SSE reading, metric scraping, polling."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson

from ascendra_proxy.emulator.server import RunningEmulator

FAST = 0.02  # time scale: 50x faster than the modelled GPU


def oai(emu: RunningEmulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0)


async def sse(url: str, body: dict[str, Any]) -> list[Any]:
    """POST ``body`` and return every ``data:`` event (parsed JSON, or the raw ``[DONE]``)."""
    events: list[Any] = []
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        buf = b""
        async for data in resp.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                assert event.startswith(b"data: "), event
                payload = event[len(b"data: ") :]
                events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    assert buf == b""
    return events


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"Content-Type": "application/json"}
        async with session.post(url, data=data, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else None


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None


async def scrape(emu: RunningEmulator) -> str:
    async with aiohttp.ClientSession() as session, session.get(emu.url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def metric(text: str, name: str, **labels: str) -> float:
    """Value of the first sample ``name{...}`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{labels} not in metrics")


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], limit: float = 3.0, interval: float = 0.01
) -> float:
    """Poll until ``predicate`` is true; returns the seconds it took (fails on timeout)."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > limit:
            raise AssertionError(f"condition not met within {limit} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start
