"""Counting generated tokens in an OpenAI-compatible server-sent-event stream.

Theory of operation: :class:`StreamCounter` is fed the raw bytes of one response as they
arrive and returns how many *tokens* (not chunks) the complete events in them carried; the
caller timestamps that return value.  It is sans-I/O, so tests feed it hand-written streams.

Chunks are not tokens (vLLM sends chunks with empty text for partial UTF-8, ``stream_interval``
batches several tokens per chunk, chat streams open with a role chunk), so the counter picks
a counting mode from the first event that has choices, and keeps it for the stream:

1. ``usage`` - the event carries a running ``usage.completion_tokens`` (we always ask for
   ``stream_options: {include_usage: true, continuous_usage_stats: true}``): tokens are the
   deltas of that running count.  Exact.
2. ``token_ids`` - choices carry ``token_ids`` lists (vLLM ``return_token_ids``): their lengths.
3. ``chunks`` - neither: one token per choice with non-empty text, a fallback that undercounts
   empty-text tokens.  :attr:`fallback` says so, so the caller can warn once.  If the final
   usage event then reports more tokens than were counted, the difference is credited to
   that final event so totals stay right (timings of the hidden tokens are lost).

Errors sent inside the stream (``{"error": {...}}``) end it with :attr:`error` set.  Lines
other than ``data:`` (comments, ``event:``) are ignored; ``\\r\\n`` line ends are accepted.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["StreamCounter"]

_DONE = b"[DONE]"


class StreamCounter:
    __slots__ = (
        "_buf",
        "_counted",
        "_last_usage",
        "done",
        "error",
        "finish_reason",
        "mode",
        "prompt_tokens",
        "usage_tokens",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._counted = 0
        self._last_usage = 0
        self.mode: str | None = None  # "usage" | "token_ids" | "chunks"
        self.done = False
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.usage_tokens: int | None = None  # last completion_tokens the server reported

    @property
    def fallback(self) -> bool:
        return self.mode == "chunks"

    def feed(self, data: bytes) -> int:
        """Consume bytes; return the number of tokens carried by the events completed now."""
        if b"\n" not in data:
            self._buf += data
            return 0
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        new = 0
        for line in lines:
            if not line.startswith(b"data:") or self.done:
                continue
            payload = line[5:].strip()
            if payload == _DONE:
                self.done = True
                continue
            n = self._event(payload)
            self._counted += n
            new += n
        return new

    def _event(self, payload: bytes) -> int:
        try:
            ev: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = f"malformed event: {payload[:120]!r}"
            self.done = True
            return 0
        if not isinstance(ev, dict):
            return 0
        if "error" in ev and not ev.get("choices"):
            err = ev["error"]
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)
            self.done = True
            return 0
        choices = ev.get("choices") or []
        usage = ev.get("usage")
        if self.mode is None and choices:
            self.mode = self._pick_mode(choices, usage)
        n = 0
        for choice in choices:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if self.mode == "token_ids":
                n += len(choice.get("token_ids") or ())
            elif self.mode == "chunks" and _has_text(choice):
                n += 1
        if isinstance(usage, dict):
            return self._with_usage(usage, n)
        return n

    @staticmethod
    def _pick_mode(choices: list[Any], usage: Any) -> str:
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            return "usage"
        if choices[0].get("token_ids") is not None:
            return "token_ids"
        return "chunks"

    def _with_usage(self, usage: dict[str, Any], counted_here: int) -> int:
        """Tokens of an event with a usage report (``counted_here`` = count by choices)."""
        if usage.get("prompt_tokens") is not None:
            self.prompt_tokens = int(usage["prompt_tokens"])
        total = usage.get("completion_tokens")
        if total is None:
            return counted_here
        self.usage_tokens = int(total)
        if self.mode == "usage":
            delta = self.usage_tokens - self._last_usage
            self._last_usage = self.usage_tokens
            return max(delta, 0)
        # Another mode: the report may reveal tokens we could not see; credit them here.
        return max(counted_here, self.usage_tokens - self._counted)


def _has_text(choice: dict[str, Any]) -> bool:
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))
