r"""Per-request output streams between the step loop and the HTTP handlers.

Theory of operation: the step loop calls :meth:`RequestStream.deliver` with each step's
:class:`TokenOutput` of the request.  ``deliver`` detokenizes incrementally, applies stop
strings the way vLLM's detokenizer does (text held back by ``len(longest stop) - 1`` characters,
checked only once more than ``min_tokens`` tokens exist, output truncated before the match),
records timing and produces one :class:`Delta` per step.  A streaming handler
:meth:`~RequestStream.attach`\ es a sink that renders and writes each delta at once from the
step loop (no task wake-up per token) and only awaits :meth:`~RequestStream.wait_end`; a
non-streaming handler awaits :meth:`~RequestStream.next_batch`, which returns every delta queued
since its last call.  The step loop never waits for a socket.

A stream ends once: finished by the engine (EOS, stop token, length), by a stop string (the
caller must then abort the engine request, which still thinks it runs), aborted, or crashed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ascendra_proxy.engine.types import TokenOutput


class TokenDecoder(Protocol):
    """Incremental detokenizer of one request: new token ids in, newly complete text out."""

    def push(self, token_ids: Sequence[int]) -> str: ...


@dataclass(slots=True)
class Delta:
    token_ids: tuple[int, ...]
    text: str
    num_generated: int  # completion tokens so far, this delta included
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # matched stop string or stop token id


# deliver() results
CONTINUE = 0
FINISHED = 1  # the engine finished the request itself
STOPPED = 2  # a stop string ended it: the caller must abort it in the engine


class Crashed(Exception):
    """The server crashed (fault injection) while this stream was open."""


class StopStrings:
    """vLLM-style stop-string matching over the growing output text."""

    __slots__ = ("_include", "_stops", "holdback")

    def __init__(self, stops: Sequence[str], include_in_output: bool) -> None:
        self._stops = [s for s in stops if s]
        self._include = include_in_output
        longest = max((len(s) for s in self._stops), default=0)
        self.holdback = 0 if include_in_output or not longest else longest - 1

    def __bool__(self) -> bool:
        return bool(self._stops)

    def find(self, text: str, new_chars: int) -> tuple[str, int] | None:
        """First stop string ending within the last ``new_chars`` chars: (stop, cut offset)."""
        for stop in self._stops:
            start = max(0, len(text) - new_chars - len(stop) + 1)
            index = text.find(stop, start)
            if index < 0:
                continue
            return stop, (index + len(stop) if self._include else index)
        return None


class RequestStream:
    """Output of one generation request; see the module docstring."""

    __slots__ = (
        "_decoder",
        "_on_token_times",
        "_pending",
        "_sent",
        "_sink",
        "_stops",
        "_text",
        "_waiter",
        "arrival",
        "crashed",
        "engine_id",
        "finish_reason",
        "first_token_at",
        "last_token_at",
        "min_tokens",
        "num_cached_tokens",
        "num_generated",
        "prompt_len",
        "scheduled_at",
    )

    def __init__(
        self,
        engine_id: str,
        prompt_len: int,
        decoder: TokenDecoder,
        stops: StopStrings,
        min_tokens: int,
        arrival: float,
        on_token_times: Callable[[RequestStream, float, int], None] | None = None,
    ) -> None:
        self.engine_id = engine_id
        self.prompt_len = prompt_len
        self.min_tokens = min_tokens
        self.arrival = arrival
        self._decoder = decoder
        self._stops = stops
        self._on_token_times = on_token_times
        self._text = ""  # output text, kept only when stop strings are in use
        self._sent = 0  # chars of _text already handed out
        self._pending: list[Delta] = []
        self._sink: Callable[[Delta], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.num_generated = 0
        self.num_cached_tokens = 0
        self.scheduled_at: float | None = None  # start of the step that first scheduled it
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.finish_reason: str | None = None
        self.crashed = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.crashed

    def deliver(self, out: TokenOutput, now: float) -> int:
        """Take one step's output; returns CONTINUE, FINISHED or STOPPED."""
        if self.done:
            return FINISHED
        if out.num_cached_tokens is not None:
            self.num_cached_tokens = out.num_cached_tokens
        ids = out.new_token_ids
        if not ids and out.finish_reason is None:
            return CONTINUE  # a prefill chunk: nothing to send (vLLM sends no empty chunks)
        if ids and self._on_token_times is not None:
            self._on_token_times(self, now, len(ids))
        if ids:
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
        self.num_generated += len(ids)
        finish = out.finish_reason.value if out.finish_reason is not None else None
        # Like vLLM, the token that matched EOS / a stop token id adds no text.
        text_ids = ids[:-1] if finish == "stop" else ids
        piece = self._decoder.push(text_ids) if text_ids else ""
        stop_reason: str | int | None = out.stop_token_id
        result = FINISHED if finish is not None else CONTINUE
        if self._stops:
            piece, matched = self._apply_stops(piece, finish is not None)
            if matched is not None and finish is None:
                finish, stop_reason, result = "stop", matched, STOPPED
            elif matched is not None:
                finish, stop_reason = "stop", matched
        self._push(Delta(ids, piece, self.num_generated, finish, stop_reason))
        if finish is not None:
            self.finish_reason = finish
        return result

    def _apply_stops(self, piece: str, engine_done: bool) -> tuple[str, str | None]:
        self._text += piece
        matched: str | None = None
        if piece and self.num_generated > self.min_tokens:
            found = self._stops.find(self._text, len(piece))
            if found is not None:
                matched, cut = found
                self._text = self._text[:cut]
        hold = 0 if (engine_done or matched is not None) else self._stops.holdback
        end = max(self._sent, len(self._text) - hold)
        out = self._text[self._sent : end]
        self._sent = end
        return out, matched

    def abort(self) -> None:
        """Finish with ``abort`` (e.g. ``/abort_request``); a waiting handler sees it."""
        if self.done:
            return
        self.finish_reason = "abort"
        self._push(Delta((), "", self.num_generated, "abort", None))

    def crash(self) -> None:
        if self.done:
            return
        self.crashed = True
        self._wake()

    def attach(self, sink: Callable[[Delta], None]) -> None:
        """Hand every delta to ``sink`` as it is produced (queued ones first), instead of
        queueing it for :meth:`next_batch`; the handler then only awaits :meth:`wait_end`."""
        pending, self._pending = self._pending, []
        for delta in pending:
            sink(delta)
        self._sink = sink

    def _push(self, delta: Delta) -> None:
        sink = self._sink
        if sink is None:
            self._pending.append(delta)
            self._wake()
            return
        sink(delta)
        if delta.finish_reason is not None:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_end(self) -> None:
        """Wait until the stream finished (returns) or crashed (raises Crashed)."""
        while not self.done:
            await self._wait()
        if self.crashed:
            raise Crashed

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def next_batch(self) -> list[Delta]:
        """Deltas queued since the last call (waits for at least one); raises Crashed."""
        while not self._pending:
            if self.crashed:
                raise Crashed
            await self._wait()
        if self.crashed:
            raise Crashed
        batch = self._pending
        self._pending = []
        return batch
