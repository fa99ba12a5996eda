"""SGLang response bytes: OpenAI chunks (null fields present, ``matched_stop``) and ``/generate``.

Theory of operation: like :mod:`.vllm_render`, one renderer per request pre-encodes the fixed
JSON.  SGLang dumps OpenAI chunks without ``exclude_unset``, so every optional field is
present as ``null``; the id is the request's ``rid`` and ``model`` echoes what the client sent.
Chat ends with a separate chunk whose delta is empty and which carries ``finish_reason`` and
``matched_stop``; the final usage chunk drops null fields.  ``matched_stop`` is the stop string
or stop token id, and the EOS id when EOS ended the request.  The native ``/generate`` stream
repeats the cumulative ``text`` and ``output_ids`` in every event, with a ``meta_info``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ascendra_proxy.emulator.serving import DONE
from ascendra_proxy.emulator.stream import Delta, RequestStream
from ascendra_proxy.emulator.vllm_render import StreamOptions

_NULL = b"null"
_REASON = {None: _NULL, "stop": b'"stop"', "length": b'"length"', "abort": b'"abort"'}
_EMPTY_DELTA = b'{"role":null,"content":null,"reasoning_content":null,"tool_calls":null}'


def matched_stop(delta: Delta, eos_token_id: int) -> str | int | None:
    if delta.finish_reason != "stop":
        return None
    return eos_token_id if delta.stop_reason is None else delta.stop_reason


class OpenAIRenderer:
    """SGLang's ``/v1/completions`` (``chat=False``) or ``/v1/chat/completions`` output."""

    def __init__(
        self,
        rid: str,
        created: int,
        model: str,
        prompt_ids: list[int],
        opts: StreamOptions,
        eos_token_id: int,
        chat: bool,
    ) -> None:
        obj = "chat.completion.chunk" if chat else "text_completion"
        self.chat = chat
        self.opts = opts
        self.prompt_ids = prompt_ids
        self.eos = eos_token_id
        self.meta = {"id": rid, "created": created, "model": model}
        self.top = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{created},'
            f'"model":{orjson.dumps(model).decode()},"choices":[{{"index":0,'
        ).encode()
        self.first = True

    def _usage(self, completion: int) -> bytes:
        if not self.opts.continuous_usage:
            return _NULL
        p = len(self.prompt_ids)
        return (
            b'{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d,'
            b'"prompt_tokens_details":null,"reasoning_tokens":0}' % (p, p + completion, completion)
        )

    def _event(self, body: bytes, d: Delta, reason: bytes, matched: bytes) -> bytes:
        extra = b""
        if self.opts.return_token_ids:
            extra = b',"token_ids":' + orjson.dumps(d.token_ids)
        return b"".join(
            (
                self.top,
                body,
                b',"logprobs":null,"finish_reason":',
                reason,
                b',"matched_stop":',
                matched,
                extra,
                b'}],"usage":',
                self._usage(d.num_generated),
                b"}\n\n",
            )
        )

    def render(self, batch: list[Delta]) -> bytes:
        parts: list[bytes] = []
        for d in batch:
            if self.chat:
                parts.append(self._chat_chunks(d))
                continue
            match = matched_stop(d, self.eos)
            parts.append(
                self._event(
                    b'"text":' + orjson.dumps(d.text),
                    d,
                    _REASON[d.finish_reason],
                    _NULL if match is None else orjson.dumps(match),
                )
            )
        return b"".join(parts)

    def _chat_chunks(self, d: Delta) -> bytes:
        out = b""
        if self.first:
            self.first = False
            role = b'"delta":{"role":"assistant","content":"","reasoning_content":null,"tool_calls":null}'  # noqa: E501
            out = self._event(role, Delta((), "", 0), _NULL, _NULL)
        content = b'"delta":{"role":null,"content":' + orjson.dumps(d.text)
        content += b',"reasoning_content":null,"tool_calls":null}'
        if d.token_ids or d.text:
            out += self._event(content, d, _NULL, _NULL)
        if d.finish_reason is not None:
            match = matched_stop(d, self.eos)
            out += self._event(
                b'"delta":' + _EMPTY_DELTA,
                Delta((), "", d.num_generated),
                _REASON[d.finish_reason],
                _NULL if match is None else orjson.dumps(match),
            )
        return out

    def usage(self, stream: RequestStream) -> dict[str, Any]:
        p = len(self.prompt_ids)
        n = stream.num_generated
        usage: dict[str, Any] = {"prompt_tokens": p, "total_tokens": p + n, "completion_tokens": n}
        if self.opts.prompt_tokens_details:
            usage["prompt_tokens_details"] = {"cached_tokens": stream.num_cached_tokens}
        usage["reasoning_tokens"] = 0
        return usage

    def tail(self, stream: RequestStream) -> bytes:
        if not self.opts.include_usage:
            return DONE
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        chunk = {**self.meta, "object": obj, "choices": [], "usage": self.usage(stream)}
        return b"data: " + orjson.dumps(_ordered(chunk)) + b"\n\n" + DONE

    def body(self, deltas: list[Delta], stream: RequestStream) -> bytes:
        last = deltas[-1]
        text = "".join(d.text for d in deltas)
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {
                "role": "assistant",
                "content": text,
                "reasoning_content": None,
                "tool_calls": None,
            }
            choice["logprobs"] = None
        else:
            choice.update(text=text, logprobs=None)
        choice.update(finish_reason=last.finish_reason, matched_stop=matched_stop(last, self.eos))
        obj = "chat.completion" if self.chat else "text_completion"
        body = {**self.meta, "object": obj, "choices": [choice], "usage": self.usage(stream)}
        return orjson.dumps(_ordered(body))


def _ordered(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "object", "created", "model", "choices", "usage")
    return {k: body[k] for k in keys if k in body}


class GenerateRenderer:
    """SGLang's native ``/generate`` events (cumulative text and output ids)."""

    def __init__(self, rid: str, prompt_len: int, eos_token_id: int) -> None:
        self.rid = rid
        self.prompt_len = prompt_len
        self.eos = eos_token_id
        self.text = ""
        self.ids: list[int] = []

    def meta_info(self, d: Delta, stream: RequestStream) -> dict[str, Any]:
        return {
            "id": self.rid,
            "finish_reason": self.finish_reason(d),
            "prompt_tokens": self.prompt_len,
            "weight_version": "default",
            "completion_tokens": d.num_generated,
            "cached_tokens": stream.num_cached_tokens,
        }

    def finish_reason(self, d: Delta) -> dict[str, Any] | None:
        if d.finish_reason is None:
            return None
        if d.finish_reason == "length":
            return {"type": "length", "length": d.num_generated}
        if d.finish_reason == "abort":
            return {
                "type": "abort",
                "message": "Abort before prefill"
                if not d.num_generated
                else "Abort in waiting queue or running batch",
            }
        return {"type": "stop", "matched": matched_stop(d, self.eos)}

    def event(self, d: Delta, stream: RequestStream) -> dict[str, Any]:
        self.text += d.text
        self.ids.extend(d.token_ids)
        return {"text": self.text, "output_ids": self.ids, "meta_info": self.meta_info(d, stream)}

    def render(self, batch: list[Delta], stream: RequestStream) -> bytes:
        return b"".join(b"data: " + orjson.dumps(self.event(d, stream)) + b"\n\n" for d in batch)

    def body(self, deltas: list[Delta], stream: RequestStream) -> bytes:
        for d in deltas[:-1]:
            self.text += d.text
            self.ids.extend(d.token_ids)
        return orjson.dumps(self.event(deltas[-1], stream))
