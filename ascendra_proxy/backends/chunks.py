"""Reading OpenAI-shaped stream chunks: token counting, facts for the pump, stripping.

Theory of operation: vLLM and SGLang stream the same OpenAI chunk shapes.  The proxy asks
the engine for more than the client did (``return_token_ids`` and running ``usage`` on every
chunk, see the adapters) so that it can count *tokens, not chunks*, and keep the exact token
ids a later continuation needs.  ``ChunkReader`` is the per-upstream-attempt reader:

- ``parse(payload)`` turns one SSE data payload into a ``ChunkEvent``: the parsed object,
  how many new tokens it carries, choice 0's token ids and text, the finish reason, the
  usage, or the in-stream error.  Token counting prefers per-chunk ``token_ids``; engines
  that ignore ``return_token_ids`` fall back to deltas of the running ``usage``; engines that
  send neither fall back to one token per choice with new content (the only approximation,
  reconciled against the final usage chunk).
- ``render(event)`` gives the bytes the client should see: the original bytes when the
  client asked for everything the proxy added (no re-serialisation on the hot path),
  otherwise the chunk with the extras removed, or ``None`` when the whole chunk exists only
  because the proxy asked for it (the usage-only chunk when the client did not ask for usage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ascendra_proxy.backends.errors import InStreamError, UpstreamProtocolError
from ascendra_proxy.backends.sse import frame


@dataclass(frozen=True, slots=True)
class ClientAsks:
    """What the client asked to see in its stream (the proxy may ask the engine for more)."""

    token_ids: bool = False
    include_usage: bool = False
    continuous_usage: bool = False

    @property
    def everything(self) -> bool:
        """True when nothing the proxy adds upstream must be stripped."""
        return self.token_ids and self.include_usage and self.continuous_usage


class ChunkEvent:
    """Facts of one upstream chunk, extracted once."""

    __slots__ = (
        "finish_reason",
        "obj",
        "payload",
        "prompt_token_ids",
        "text",
        "token_ids",
        "tokens",
        "usage",
    )

    def __init__(self, payload: bytes, obj: dict[str, Any]) -> None:
        self.payload = payload
        self.obj = obj
        self.tokens = 0
        self.token_ids: list[int] | None = None
        self.prompt_token_ids: list[int] | None = None
        self.text: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    @property
    def usage_only(self) -> bool:
        return not self.obj.get("choices") and self.usage is not None


class ChunkReader:
    """Per-upstream-attempt chunk reader (one per backend stream; holds counting state)."""

    __slots__ = ("_backend", "_ids_mode", "_last_usage", "asks", "counted")

    def __init__(self, backend: str, asks: ClientAsks) -> None:
        self._backend = backend
        self.asks = asks
        self._ids_mode = False
        self._last_usage = 0
        self.counted = 0

    def parse(self, payload: bytes) -> ChunkEvent:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(self._backend, f"bad JSON in stream: {exc}") from exc
        if type(obj) is not dict:
            raise UpstreamProtocolError(self._backend, "stream event is not a JSON object")
        if "error" in obj or obj.get("object") == "error":
            raise _in_stream_error(self._backend, obj, payload)
        ev = ChunkEvent(payload, obj)
        usage = obj.get("usage")
        if type(usage) is dict:
            ev.usage = usage
        choices = obj.get("choices")
        if choices:
            _read_choices(ev, choices)
        if ev.prompt_token_ids is None:
            top = obj.get("prompt_token_ids")
            if type(top) is list:
                ev.prompt_token_ids = top
        ev.tokens = self._count(ev, choices)
        self.counted += ev.tokens
        return ev

    def _count(self, ev: ChunkEvent, choices: Any) -> int:
        if ev.token_ids is not None or self._ids_mode:
            self._ids_mode = True
            return ev.tokens  # summed over choices by _read_choices
        done = _completion_tokens(ev.usage)
        if done is not None and (choices or done > self.counted):
            new = max(0, done - self._last_usage) if choices else done - self.counted
            self._last_usage = done
            return new
        if not choices:
            return 0
        return sum(1 for ch in choices if _has_content(ch))

    def render(self, ev: ChunkEvent) -> bytes | None:
        """The client's bytes for this event (framed), or None to drop it."""
        asks = self.asks
        if asks.everything:
            return frame(ev.payload)
        obj = ev.obj
        if ev.usage_only and not asks.include_usage:
            return None
        changed = False
        if not asks.token_ids:
            changed = _strip_token_ids(obj)
        if not asks.continuous_usage and "usage" in obj and obj.get("choices"):
            del obj["usage"]
            changed = True
        if not changed:
            return frame(ev.payload)
        return frame(orjson.dumps(obj))


def _read_choices(ev: ChunkEvent, choices: Any) -> None:
    if type(choices) is not list:
        return
    n = 0
    for i, ch in enumerate(choices):
        if type(ch) is not dict:
            continue
        tids = ch.get("token_ids")
        if type(tids) is list:
            n += len(tids)
            if i == 0:
                ev.token_ids = tids
        if i == 0:
            ev.finish_reason = ch.get("finish_reason")
            ev.text = _choice_text(ch)
            ptids = ch.get("prompt_token_ids")
            if type(ptids) is list:
                ev.prompt_token_ids = ptids
        elif ev.finish_reason is None:
            ev.finish_reason = ch.get("finish_reason")
    ev.tokens = n


def _choice_text(ch: dict[str, Any]) -> str | None:
    text = ch.get("text")
    if text is None:
        delta = ch.get("delta")
        if type(delta) is dict:
            text = delta.get("content")
    return text if type(text) is str else None


def _has_content(ch: Any) -> bool:
    return type(ch) is dict and bool(_choice_text(ch))


def _completion_tokens(usage: dict[str, Any] | None) -> int | None:
    if usage is None:
        return None
    n = usage.get("completion_tokens")
    return n if type(n) is int else None


def _strip_token_ids(obj: dict[str, Any]) -> bool:
    changed = obj.pop("prompt_token_ids", None) is not None
    for ch in obj.get("choices") or ():
        if type(ch) is dict:
            changed = (ch.pop("token_ids", None) is not None) or changed
            changed = (ch.pop("prompt_token_ids", None) is not None) or changed
    return changed


def _in_stream_error(backend: str, obj: dict[str, Any], payload: bytes) -> InStreamError:
    err = obj.get("error")
    body = err if type(err) is dict else obj
    message = body.get("message")
    if type(message) is not str:
        message = str(err if err is not None else obj)[:500]
    code = body.get("code")
    status = code if type(code) is int and 100 <= code < 600 else None
    return InStreamError(backend, message, status, payload)
