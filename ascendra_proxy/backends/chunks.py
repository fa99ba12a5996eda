"""Reading OpenAI-shaped stream chunks: token counting, facts for the pump, stripping.

Theory of operation: vLLM and SGLang stream the same OpenAI chunk shapes.  The proxy asks
the engine for more than the client did (``return_token_ids`` and running ``usage`` on every
chunk, see the adapters) so that it can count *tokens, not chunks*, and keep the exact token
ids a later continuation needs.  ``ChunkReader`` is the per-upstream-attempt reader:

- ``read(payload)`` parses one SSE data payload once (orjson), raises the in-stream error if
  it is one, counts the tokens it carries (``tokens``), appends choice 0's token ids, text,
  finish reason and usage to the ``StreamRecord`` of the client stream, and returns the bytes
  the client should see.  Token counting prefers per-chunk ``token_ids``; engines that ignore
  ``return_token_ids`` fall back to deltas of the running ``usage``; engines that send
  neither fall back to one token per choice with new content (the only approximation,
  reconciled against the final usage chunk).
- The client's bytes are the original bytes when the client asked for everything the proxy
  added (no re-serialisation), otherwise the chunk with the extras removed, or ``None`` when
  the chunk exists only because the proxy asked for it (the usage-only chunk when the client
  did not ask for usage).  One fused method, no per-event objects: this runs for every token.
- ``system_fingerprint``: vLLM puts it on the stream's *last* message, which is the usage-only
  chunk when usage was asked for (the proxy always asks) and otherwise each choice's terminal
  chunk (the one with a ``finish_reason``).  For a client that did not ask for usage the reader
  therefore holds back terminal chunks until the usage-only chunk arrives, copies its
  fingerprint onto them and sends them in its place; ``flush`` releases held chunks as they
  are when the stream ends without one (``[DONE]``, end of stream, error).  Only terminal
  chunks are held: the per-token cost is one comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ascendra_proxy.backends.errors import InStreamError, UpstreamProtocolError


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


class StreamRecord:
    """What one client stream has been told so far (choice 0), across upstream attempts.

    Identity (``id``, ``created``, ``model``, ``object``) comes from the first chunk; the rest
    accumulates: prompt token ids, generated token ids, text pieces, finish reason, last usage.
    A continuation on another backend (the Ascendra issue) is planned from this record.
    """

    __slots__ = (
        "created",
        "finish_reason",
        "id",
        "model",
        "object",
        "prompt_token_ids",
        "text",
        "text_at",
        "token_ids",
        "usage",
    )

    def __init__(self) -> None:
        self.id: str | None = None
        self.created: int | None = None
        self.model: str | None = None
        self.object: str | None = None
        self.prompt_token_ids: list[int] | None = None
        self.token_ids: list[int] = []
        self.text: list[str] = []
        self.text_at = 0  # generated tokens when text was last sent (later ones: partial UTF-8)
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def set_identity(self, obj: dict[str, Any]) -> None:
        self.id, self.created = obj.get("id"), obj.get("created")
        self.model, self.object = obj.get("model"), obj.get("object")


class ChunkReader:
    """Per-upstream-attempt reader: one ``read`` per event parses, counts, records, renders."""

    __slots__ = (
        "_backend",
        "_everything",
        "_held",
        "_hold_final",
        "_ids_mode",
        "_keep_ids",
        "_keep_running_usage",
        "_last_usage",
        "asks",
        "counted",
        "record",
        "tokens",
    )

    def __init__(self, backend: str, asks: ClientAsks, record: StreamRecord | None = None) -> None:
        self._backend = backend
        self.asks = asks
        self._everything = asks.everything
        self._keep_ids = asks.token_ids
        self._keep_running_usage = asks.continuous_usage
        # without a usage chunk of its own the client gets the fingerprint on terminal chunks
        self._hold_final = not asks.include_usage
        self._held: list[dict[str, Any]] = []  # terminal chunks waiting for the fingerprint
        self.record = StreamRecord() if record is None else record
        self._ids_mode = False
        self._last_usage = 0
        self.counted = 0
        self.tokens = 0  # new tokens in the event last read

    def read(self, payload: bytes) -> bytes | None:
        """Absorb one SSE data payload; returns the client's framed bytes, or None to drop it."""
        obj = parse_event(self._backend, payload)
        choices = obj.get("choices")
        if self.record.id is None:
            self.record.set_identity(obj)
        if type(choices) is list and len(choices) == 1:
            ch = choices[0]
            if type(ch) is dict and type(ch.get("token_ids")) is list:
                return self._read_one(obj, payload, ch)
        return self._read_general(obj, payload, choices if type(choices) is list else None)

    def _read_one(self, obj: dict[str, Any], payload: bytes, ch: dict[str, Any]) -> bytes | None:
        """The hot path: one choice carrying its token ids (vLLM/SGLang with n=1)."""
        rec = self.record
        tids: list[int] = ch["token_ids"]
        n = len(tids)
        if n:
            rec.token_ids += tids
        finish = _record_choice(rec, ch, obj)
        usage = obj.get("usage")
        if type(usage) is dict:
            rec.usage = usage
        self._ids_mode = True
        self.tokens = n
        self.counted += n
        if self._everything:
            return b"data: " + payload + b"\n\n"
        changed = False
        if not self._keep_ids:
            del ch["token_ids"]
            ch.pop("prompt_token_ids", None)
            obj.pop("prompt_token_ids", None)
            changed = True
        if usage is not None and not self._keep_running_usage:
            del obj["usage"]
            changed = True
        if finish is not None and self._hold_final:
            self._held.append(obj)
            return None
        return b"data: " + (_dumps(obj) if changed else payload) + b"\n\n"

    def flush(self) -> bytes | None:
        """The held terminal chunks as they are (the stream ended without a usage chunk)."""
        return self._release(None) if self._held else None

    def _release(self, fingerprint: Any) -> bytes | None:
        """The held terminal chunks, carrying ``fingerprint`` when there is one."""
        held, self._held = self._held, []
        if not held:
            return None
        out = []
        for obj in held:
            if fingerprint is not None:
                obj["system_fingerprint"] = fingerprint
            out.append(b"data: " + _dumps(obj) + b"\n\n")
        return b"".join(out)

    def _read_general(
        self, obj: dict[str, Any], payload: bytes, choices: list[Any] | None
    ) -> bytes | None:
        """Every other shape: several choices, no token ids, usage-only and role chunks."""
        rec = self.record
        usage = obj.get("usage")
        if type(usage) is dict:
            rec.usage = usage
        else:
            usage = None
        n = _absorb_choices(rec, choices, obj) if choices else -1
        if rec.prompt_token_ids is None:
            top = obj.get("prompt_token_ids")
            if type(top) is list:
                rec.prompt_token_ids = top
        tokens = self._count(n, choices, usage)
        self.tokens = tokens
        self.counted += tokens
        return self._render(obj, payload, choices, usage)

    def _count(self, n: int, choices: list[Any] | None, usage: dict[str, Any] | None) -> int:
        if n >= 0 or self._ids_mode:
            self._ids_mode = True
            return max(n, 0)
        done = None if usage is None else usage.get("completion_tokens")
        if type(done) is int and (choices or done > self.counted):
            new = max(0, done - self._last_usage) if choices else done - self.counted
            self._last_usage = done
            return new
        if not choices:
            return 0
        return sum(1 for ch in choices if type(ch) is dict and _choice_text(ch))

    def _render(
        self,
        obj: dict[str, Any],
        payload: bytes,
        choices: list[Any] | None,
        usage: dict[str, Any] | None,
    ) -> bytes | None:
        asks = self.asks
        if self._everything:
            return b"data: " + payload + b"\n\n"
        if usage is not None and not choices and not asks.include_usage:
            return self._release(obj.get("system_fingerprint"))
        changed = False
        if not asks.token_ids:
            changed = _strip_token_ids(obj, choices)
        if usage is not None and choices and not asks.continuous_usage:
            del obj["usage"]
            changed = True
        if self._hold_final and choices and _finishes(choices):
            self._held.append(obj)
            return None
        return b"data: " + (_dumps(obj) if changed else payload) + b"\n\n"


_loads = orjson.loads
_dumps = orjson.dumps


def parse_event(backend: str, payload: bytes) -> dict[str, Any]:
    """One SSE data payload as a JSON object; raises the in-stream error if it is one."""
    try:
        obj = _loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(backend, f"bad JSON in stream: {exc}") from exc
    if type(obj) is not dict:
        raise UpstreamProtocolError(backend, "stream event is not a JSON object")
    if obj.get("choices") is None and ("error" in obj or obj.get("object") == "error"):
        raise _in_stream_error(backend, obj, payload)
    return obj


def _absorb_choices(rec: StreamRecord, choices: list[Any], obj: dict[str, Any]) -> int:
    """Record choice 0; returns the token ids summed over choices, -1 if no choice had ids."""
    n = -1
    first = True
    for ch in choices:
        if type(ch) is not dict:
            continue
        tids = ch.get("token_ids")
        if type(tids) is list:
            n = len(tids) if n < 0 else n + len(tids)
        if not first:
            continue
        first = False
        if tids:
            rec.token_ids.extend(tids)
        _record_choice(rec, ch, obj)
    return n


def _record_choice(rec: StreamRecord, ch: dict[str, Any], obj: dict[str, Any]) -> Any:
    """Append choice 0's text and finish reason (and, once, the prompt ids) to the record;
    returns the finish reason."""
    text = _choice_text(ch)
    if text:
        rec.text.append(text)
        rec.text_at = len(rec.token_ids)
    finish = ch.get("finish_reason")
    if finish is not None:
        rec.finish_reason = finish
    if rec.prompt_token_ids is None:
        ptids = ch.get("prompt_token_ids") or obj.get("prompt_token_ids")
        if type(ptids) is list:
            rec.prompt_token_ids = ptids
    return finish


def _finishes(choices: list[Any]) -> bool:
    """Whether a choice of this chunk ends (a terminal chunk)."""
    return any(type(ch) is dict and ch.get("finish_reason") is not None for ch in choices)


def cached_prompt_tokens(usage: Any) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens`` when the engine reports it, else None.

    vLLM sends it on the final usage (stream) or the answer's usage (unary) when it runs with
    ``--enable-prompt-tokens-details``; without that flag the field is absent or null.
    """
    details = usage.get("prompt_tokens_details") if type(usage) is dict else None
    cached = details.get("cached_tokens") if type(details) is dict else None
    return cached if type(cached) is int and cached >= 0 else None


def _choice_text(ch: dict[str, Any]) -> str | None:
    text = ch.get("text")
    if text is None:
        delta = ch.get("delta")
        if type(delta) is dict:
            text = delta.get("content")
    return text if type(text) is str else None


def _strip_token_ids(obj: dict[str, Any], choices: list[Any] | None) -> bool:
    changed = obj.pop("prompt_token_ids", None) is not None
    for ch in choices or ():
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
