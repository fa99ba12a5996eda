"""Helpers for the mid-stream migration tests: routing pins and stream transcripts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.request import RequestState
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
