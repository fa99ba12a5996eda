"""Disconnect storms: clients leave at every moment of their request (while it connects, as
the engine's headers arrive, mid-stream), and no engine keeps generating for any of them.

The proof is the engines' own state, never the proxy's count: after the last client left,
every emulated engine (two vLLM-flavoured, one SGLang-flavoured, at the modelled A100's real
speed) is empty.  A request left running would decode its 4,000 tokens for at least 44 s
(10 ms weight-read floor + 1 ms overhead per step), so the generous 30 s bound on the wait
only absorbs a loaded machine; it cannot let an orphan through.  The time it took is
printed (``-s``): the engines empty well within a second of the last client on a quiet host.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
import pytest
from proxy_stack import CLIENT_KEY, MODEL, Stack, proxy_config, serve_stack

from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator

CLIENTS = 200
ROUNDS = 2
MAX_TOKENS = 4000  # an orphan would decode for >= 44 s
DRAIN_BOUND_S = 30.0
HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": MODEL, "prompt": "x", "max_tokens": MAX_TOKENS, "stream": True}
BODY_EXACT = {**BODY, "ignore_eos": True}


@contextlib.asynccontextmanager
async def real_speed_stack() -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        emus = {}
        for name in ("v1", "v2", "sg1"):
            flavor: Literal["vllm", "sglang"] = "sglang" if name.startswith("sg") else "vllm"
            emu = EmulatorConfig(flavor=flavor, model=MODEL, time_scale=1.0, seed=11)
            emus[name] = await stack.enter_async_context(run_emulator(emu))
        yield await serve_stack(stack, emus, proxy_config(emus))


async def one_client(
    session: aiohttp.ClientSession, url: str, rng: random.Random, left: list[float]
) -> None:
    """Send a stream and leave at a moment drawn from ``rng``; record when it left."""
    loop = asyncio.get_running_loop()
    how = rng.choice(("while_connecting", "while_connecting", "at_headers", "mid_stream"))
    if how == "while_connecting":
        task = asyncio.create_task(session.post(url, json=BODY_EXACT, headers=HEADERS))
        await asyncio.sleep(rng.uniform(0.0, 0.03))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            resp = await task
            resp.close()  # it answered before the cancel landed: leave now
        left.append(loop.time())
        return
    resp = await session.post(url, json=BODY_EXACT, headers=HEADERS)
    if how == "mid_stream":
        for _ in range(rng.randint(1, 10)):
            await resp.content.readline()
    resp.close()
    left.append(loop.time())


def engines_busy(stack: Stack) -> dict[str, int]:
    out = {}
    for name, emu in stack.emulators.items():
        stats = emu.engine.stats()
        if stats.num_running + stats.num_waiting:
            out[name] = stats.num_running + stats.num_waiting
    return out


@pytest.mark.parametrize("seed", range(ROUNDS))
async def test_engines_empty_after_a_disconnect_storm(seed: int) -> None:
    rng = random.Random(seed)
    async with real_speed_stack() as s:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            left: list[float] = []
            url = s.url + "/v1/completions"
            await asyncio.gather(*(one_client(session, url, rng, left) for _ in range(CLIENTS)))
        loop = asyncio.get_running_loop()
        last_left = max(left)
        while busy := engines_busy(s):
            waited = loop.time() - last_left
            assert waited < DRAIN_BOUND_S, f"engines still busy {waited:.1f} s on: {busy}"
            await asyncio.sleep(0.01)
        drained = loop.time() - last_left
        print(f"seed {seed}: engines empty {drained:.3f} s after the last of {CLIENTS} left")
        made = sum(e.engine.stats().generation_tokens_total for e in s.emulators.values())
        assert made < CLIENTS * MAX_TOKENS / 4  # nobody ran anywhere near its end
