"""Token-exact continuation of a stream on another backend.

Theory of operation: a stream that must leave its backend mid-way (the backend failed, or the
policy migrates it) continues elsewhere as a ``/v1/completions`` request whose prompt is the
original prompt token ids plus the generated token ids, with the remaining ``max_tokens``,
``min_tokens`` reduced and every sampling parameter unchanged.  ``plan`` builds that body from
the ``StreamRecord`` of what the client was sent; ``ContinuationReader`` reads the new
backend's chunks and renders them as the *same* client stream: the first chunk's identity
(``id``, ``created``, ``model``), chat chunks for chat clients, usage over the whole request,
and the new engine's ``system_fingerprint`` where a direct client gets it (on the usage chunk,
or without one on the terminal chunk: held back as ``ChunkReader`` does).

The cut and partial UTF-8: engines emit text only for complete characters, so the generated
tokens after the last chunk that carried text may be bytes of a character the client has not
seen yet.  A fresh engine decodes its output without the prompt's trailing bytes, so the plan
rolls those tokens back (``rollback``): the continuation starts at the last token whose text
was sent, regenerates the rolled-back tokens (a deterministic engine, or greedy sampling,
reproduces them), and the reader skips them after checking their ids match what was sent.
Their text arrives with the first complete character, exactly as an unmigrated stream had it.
An engine that samples differently (real vLLM with temperature > 0 does not reproduce a
seeded sample from a continuation) may regenerate other tokens there: when the client saw
neither their text nor their ids the new ones simply stand (a valid sample), otherwise the
continuation fails as diverged.

Stop strings: engines hold back stop-string text (``len(longest stop) - 1`` characters) that
is not tied to token boundaries, and a stop string split across a cut would be seen by
neither engine.  So a request with stop strings continues only as a full *replay*: the
original prompt, every sent token regenerated (ids checked) and the text already sent
skipped by characters; the target engine then applies the stop strings over the whole output
exactly as an unmigrated run.  Replays cost a decode of the sent tokens, so the pump uses
them only for failover; a policy migration of such a request is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ascendra_proxy.backends.chunks import ChunkReader, ClientAsks, StreamRecord, parse_event
from ascendra_proxy.backends.errors import UpstreamProtocolError

# chat-only fields that have no meaning (or another one) for /v1/completions
_CHAT_ONLY = frozenset(
    {
        "messages",
        "max_completion_tokens",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "chat_template",
        "chat_template_kwargs",
        "add_generation_prompt",
        "continue_final_message",
        "documents",
        "echo",
        "suffix",
    }
)


@dataclass(frozen=True, slots=True)
class Continuation:
    """Where a stream resumes: the completions body and what the reader must know."""

    body: dict[str, Any]
    rollback: int  # generated tokens already sent that the new backend regenerates
    kept: int  # generated tokens in the continuation's prompt
    skip_chars: int  # text already sent that the regenerated tokens produce again
    prompt_tokens: int  # the original prompt's size (usage)
    chat: bool


def plan(
    body: dict[str, Any],
    chat: bool,
    record: StreamRecord,
    max_tokens: int | None,
    replay: bool = False,
) -> Continuation | None:
    """The continuation request for ``record``, or None when no exact continuation exists.

    With stop strings only a full ``replay`` is exact (see the module docstring).
    """
    prompt = record.prompt_token_ids
    if prompt is None or record.finish_reason is not None or record.id is None:
        return None
    if (body.get("n") or 1) != 1 or body.get("best_of"):
        return None
    generated = record.token_ids
    skip_chars = 0
    if body.get("stop"):
        if not replay:
            return None
        rollback, skip_chars = len(generated), sum(map(len, record.text))
    else:
        rollback = len(generated) - record.text_at
    kept = len(generated) - rollback
    cont = {k: v for k, v in body.items() if k not in _CHAT_ONLY}
    cont["prompt"] = list(prompt) + generated[:kept]
    cont["stream"] = True
    cont.pop("max_tokens", None)
    if max_tokens is not None:
        left = max_tokens - kept
        if left <= 0:
            return None
        cont["max_tokens"] = left
    min_tokens = body.get("min_tokens")
    if type(min_tokens) is int and min_tokens > 0:
        cont["min_tokens"] = max(0, min_tokens - kept)
    return Continuation(cont, rollback, kept, skip_chars, len(prompt), chat)


class ContinuationReader(ChunkReader):
    """Reads a continuation's completions chunks as the original client stream."""

    __slots__ = ("_plan", "_skip", "_skip_chars", "_skipped")

    def __init__(self, backend: str, asks: ClientAsks, record: StreamRecord, c: Continuation):
        super().__init__(backend, asks, record)
        self._plan = c
        self._skip = c.rollback
        self._skip_chars = c.skip_chars
        self._skipped: list[int] = []

    def read(self, payload: bytes) -> bytes | None:
        obj = parse_event(self._backend, payload)
        choices = obj.get("choices")
        self.tokens = 0
        usage = obj.get("usage")
        ch = choices[0] if type(choices) is list and choices else None
        if type(ch) is not dict:
            return self._usage_only(usage, obj.get("system_fingerprint"))
        ids = ch.get("token_ids")
        if type(ids) is not list:
            raise UpstreamProtocolError(self._backend, "continuation chunk without token ids")
        ids = self._skip_rolled_back(ids)
        text = ch.get("text")
        if type(text) is not str:
            text = ""
        elif self._skip_chars:
            cut = min(self._skip_chars, len(text))
            text, self._skip_chars = text[cut:], self._skip_chars - cut
        finish = ch.get("finish_reason")
        if not ids and not text and finish is None:
            return None
        return self._emit(ids, text, finish, ch.get("stop_reason"), usage)

    def _skip_rolled_back(self, ids: list[int]) -> list[int]:
        if not self._skip:
            return ids
        take = min(self._skip, len(ids))
        self._skipped += ids[:take]
        self._skip -= take
        if not self._skip:
            rec, c = self.record, self._plan
            sent = rec.token_ids[c.kept : c.kept + c.rollback]
            if self._skipped != sent:
                if self.asks.token_ids or c.skip_chars:
                    raise UpstreamProtocolError(
                        self._backend, "continuation diverged from the tokens already sent"
                    )
                # the client saw no text (and no ids) of these tokens: the new ones stand
                rec.token_ids[c.kept : c.kept + c.rollback] = self._skipped
        return ids[take:]

    def _emit(
        self,
        ids: list[int],
        text: str,
        finish: Any,
        stop_reason: Any,
        usage: Any,
    ) -> bytes | None:
        rec = self.record
        rec.token_ids += ids
        if text:
            rec.text.append(text)
            rec.text_at = len(rec.token_ids)
        if finish is not None:
            rec.finish_reason = finish
        self.tokens = len(ids)
        self.counted += len(ids)
        choice: dict[str, Any] = {"index": 0}
        if self._plan.chat:
            choice["delta"] = {"content": text} if text or finish is None else {}
            choice["logprobs"] = None
        else:
            choice["text"] = text
            choice["logprobs"] = None
        choice["finish_reason"] = finish
        if finish is not None or stop_reason is not None:
            choice["stop_reason"] = stop_reason
        if self.asks.token_ids:
            choice["token_ids"] = ids
        obj = self._identity()
        obj["choices"] = [choice]
        full = self._usage(usage)
        if full is not None and self.asks.continuous_usage:
            obj["usage"] = full
        if finish is not None and self._hold_final:
            self._held.append(obj)  # until the usage chunk brings the fingerprint
            return None
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def _usage_only(self, usage: Any, fingerprint: Any) -> bytes | None:
        full = self._usage(usage)
        if not self.asks.include_usage:
            return self._release(fingerprint) if full is not None else None
        if full is None:
            return None
        obj = self._identity()
        obj["choices"] = []
        obj["usage"] = full
        if fingerprint is not None:
            obj["system_fingerprint"] = fingerprint
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def _usage(self, usage: Any) -> dict[str, Any] | None:
        """The continuation's usage restated for the whole request."""
        if type(usage) is not dict:
            return None
        done = usage.get("completion_tokens")
        completion = len(self.record.token_ids)
        if type(done) is int:
            completion = self._plan.kept + done
        prompt = self._plan.prompt_tokens
        full = dict(usage)  # the engine's extras (details) stay, the counts are restated
        full["prompt_tokens"] = prompt
        full["total_tokens"] = prompt + completion
        full["completion_tokens"] = completion
        self.record.usage = full
        return full

    def _identity(self) -> dict[str, Any]:
        rec = self.record
        obj: dict[str, Any] = {"id": rec.id}
        obj["object"] = rec.object or (
            "chat.completion.chunk" if self._plan.chat else "text_completion"
        )
        obj["created"] = rec.created
        obj["model"] = rec.model
        return obj
