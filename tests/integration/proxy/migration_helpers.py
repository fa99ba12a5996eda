"""Helpers for the mid-stream migration tests: routing pins and stream transcripts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy_stack import MODEL, TIME_SCALE, Stack, proxy_config, serve_stack

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator
from ascendra_proxy.proxy.gateway import Gateway


@dataclass
class Transcript:
    """Everything a client saw in one stream."""

    text: str = ""
    pieces: list[str] = field(default_factory=list)  # text per chunk with tokens
    token_ids: list[int] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    created: set[int] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    finish: list[str] = field(default_factory=list)
    usage: Any = None
    chunks: int = 0

    def add(self, chunk: Any, chat: bool) -> None:
        self.chunks += 1
        self.ids.add(chunk.id)
        self.created.add(chunk.created)
        self.models.add(chunk.model)
        if chunk.usage is not None:
            self.usage = chunk.usage
        for ch in chunk.choices:
            piece = (ch.delta.content if chat else ch.text) or ""
            self.text += piece
            ids = (ch.model_extra or {}).get("token_ids") or []
            self.token_ids += ids
            if ids:
                self.pieces.append(piece)
            if ch.finish_reason is not None:
                self.finish.append(ch.finish_reason)


async def transcript(stream: AsyncIterator[Any], chat: bool) -> Transcript:
    t = Transcript()
    async for chunk in stream:
        t.add(chunk, chat)
    return t


def pin_route(gw: Gateway, order: tuple[str, ...]) -> None:
    """The first backend of ``order`` not excluded, whatever the load (deterministic tests)."""

    def route(
        state: RequestState, snaps: Sequence[BackendSnapshot], now: float, exclude: frozenset[str]
    ) -> Dispatch | Reject | Hold:
        for name in order:
            if name not in exclude:
                return Dispatch(name, "failover" if state.tokens else "pinned")
        return Reject(503, "no_backend", "every backend excluded", "no_backend")

    gw.policy.route = route  # type: ignore[method-assign,assignment]


HP_SEQS = 2  # a small HP engine: one running request already refuses tickets (frac 0.5)


@contextlib.asynccontextmanager
async def ascendra_stack(
    policy: dict[str, Any], slo: dict[str, Any], **overrides: Any
) -> AsyncIterator[Stack]:
    """2 LP (``lp1``, ``lp2``) + 1 small HP (``hp1``) emulated vLLM engines, ascendra policy
    (``overrides``: more top-level config sections)."""
    async with contextlib.AsyncExitStack() as stack:
        emus = {}
        for name in ("lp1", "lp2", "hp1"):
            seqs = HP_SEQS if name == "hp1" else None
            cfg = EmulatorConfig(
                flavor="vllm", model=MODEL, time_scale=TIME_SCALE, seed=7, max_num_seqs=seqs
            )
            emus[name] = await stack.enter_async_context(run_emulator(cfg))
        data = proxy_config(emus, policy={"type": "ascendra", **policy}, slo=slo, **overrides)
        main = data["pools"][0]["backends"]
        main[2]["engine_settings"] = {"max_num_seqs": HP_SEQS}
        data["pools"] = [
            {"name": "lp", "role": "lp", "backends": main[:2]},
            {"name": "hp", "role": "hp", "backends": main[2:]},
        ]
        yield await serve_stack(stack, emus, data)
