"""The proxy in front of emulated engines, all in-process on free loopback ports.

``stack`` starts two vLLM-flavour emulators and one SGLang-flavour emulator (the same model)
behind one proxy, and yields handles plus an ``openai.AsyncOpenAI`` client pointed at the
proxy.  Tests pick backends by name through the proxy's policy (``least_loaded``) or talk to
an emulator directly to inject faults and read its engine state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import openai
from aiohttp import web

from ascendra_proxy.config import parse_config
from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator
from ascendra_proxy.proxy.app import start_server
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.keys import GATEWAY

MODEL = "llama3-8b"
CLIENT_KEY = "client-key"
ADMIN_KEY = "admin-key"
TIME_SCALE = 0.2  # emulated engines run 5x faster than the modelled A100


@dataclass
class Stack:
    url: str
    emulators: dict[str, RunningEmulator]
    runner: web.AppRunner
    client: openai.AsyncOpenAI

    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY]

    def running(self, name: str) -> int:
        stats = self.emulators[name].engine.stats()
        return stats.num_running + stats.num_waiting


def proxy_config(emus: dict[str, RunningEmulator], **overrides: Any) -> dict[str, Any]:
    backends = [
        {
            "name": n,
            "url": e.url,
            "engine": "sglang" if n.startswith("sg") else "vllm",
            "model": MODEL,
        }
        for n, e in emus.items()
    ]
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "pools": [{"name": "main", "role": "mixed", "backends": backends}],
        "policy": {"type": "least_loaded"},
        "auth": {"api_keys": [CLIENT_KEY], "admin_key": ADMIN_KEY},
        "health": {"interval_s": 0.5, "failure_threshold": 3, "cooldown_s": 30},
        "scrape": {"interval_s": 0.1},
        "timeouts": {"first_byte_s": 30, "idle_s": 10, "total_s": 60},
    }
    data.update(overrides)
    return data


@contextlib.asynccontextmanager
async def make_stack(
    names: tuple[str, ...] = ("v1", "v2", "sg1"), **overrides: Any
) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        emus = {}
        for name in names:
            flavor: Literal["vllm", "sglang"] = "sglang" if name.startswith("sg") else "vllm"
            emu = EmulatorConfig(flavor=flavor, model=MODEL, time_scale=TIME_SCALE, seed=7)
            emus[name] = await stack.enter_async_context(run_emulator(emu))
        yield await serve_stack(stack, emus, proxy_config(emus, **overrides))


async def serve_stack(
    stack: contextlib.AsyncExitStack, emus: dict[str, RunningEmulator], data: dict[str, Any]
) -> Stack:
    """The proxy for config ``data`` and an SDK client for it, both closed by ``stack``."""
    runner, addrs = await start_server(parse_config(data), "127.0.0.1", 0, shutdown_grace_s=0.5)
    stack.push_async_callback(runner.cleanup)
    url = f"http://{addrs[0][0]}:{addrs[0][1]}"
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    stack.push_async_callback(client.close)
    return Stack(url, emus, runner, client)
