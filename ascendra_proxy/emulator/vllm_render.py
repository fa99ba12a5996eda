"""vLLM 0.32 response bytes: streaming chunks from templates, non-streaming bodies.

Theory of operation: a renderer is made per request with everything constant in its chunks
(id, created, model, options), pre-encodes the fixed JSON around the per-token values, and then
renders each :class:`Delta` by joining a few byte strings with the ``orjson``-encoded text and
token ids.  That keeps a chunk at a few microseconds, which is what lets one process stream
tens of thousands of tokens per second.  Field order and presence follow what vLLM 0.32 sends
(``exclude_unset`` chunks: ``usage`` only with ``continuous_usage_stats``, ``stop_reason`` on
chat's last chunk only, ``system_fingerprint`` on the last content chunk unless a usage chunk
follows; see the research notes on stream shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from ascendra_proxy.emulator.serving import DONE
from ascendra_proxy.emulator.stream import Delta, RequestStream

_NULL = b"null"
_REASON = {None: _NULL, "stop": b'"stop"', "length": b'"length"', "abort": b'"abort"'}


def json_value(value: str | int | None) -> bytes:
    return _NULL if value is None else orjson.dumps(value)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    return_token_ids: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    prompt_tokens_details: bool = True


class _Common:
    def __init__(
        self,
        rid: str,
        obj: str,
        created: int,
        model: str,
        fingerprint: str,
        prompt_ids: list[int],
        opts: StreamOptions,
    ) -> None:
        self.opts = opts
        self.prompt_ids = prompt_ids
        self.prompt_len = len(prompt_ids)
        self.fingerprint = fingerprint
        self.top = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{created},'
            f'"model":{orjson.dumps(model).decode()},"choices":'
        ).encode()
        self.first = True

    # What vLLM 0.32 adds to usage differs per endpoint and per place (measured):
    # chat's running usage ends with completion_tokens_details, its last usage chunk reports
    # created_cache_tokens 0, and non-streaming bodies carry the full details objects.
    RUNNING_USAGE_TAIL: ClassVar[bytes] = b"}"
    STREAM_DETAILS: ClassVar[tuple[tuple[str, Any], ...]] = ()
    BODY_DETAILS: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("created_cache_tokens", None),
        ("multimodal_tokens", None),
    )

    def usage(self, completion: int) -> bytes:
        p = self.prompt_len
        return b'{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d%s' % (
            p,
            p + completion,
            completion,
            self.RUNNING_USAGE_TAIL,
        )

    def final_usage(self, stream: RequestStream, body: bool = False) -> dict[str, Any]:
        n = stream.num_generated
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_len,
            "total_tokens": self.prompt_len + n,
            "completion_tokens": n,
        }
        if self.opts.prompt_tokens_details:
            extra = self.BODY_DETAILS if body else self.STREAM_DETAILS
            details = {"cached_tokens": stream.num_cached_tokens, **dict(extra)}
            usage["prompt_tokens_details"] = details
        else:
            usage["prompt_tokens_details"] = None
        if body:
            usage["completion_tokens_details"] = None
        return usage

    def tail(self, stream: RequestStream) -> bytes:
        if not self.opts.include_usage:
            return DONE
        usage = orjson.dumps(self.final_usage(stream))
        fp = orjson.dumps(self.fingerprint)
        return self.top + b'[],"usage":' + usage + b',"system_fingerprint":' + fp + b"}\n\n" + DONE

    def _body(
        self, top: bytes, choice: dict[str, Any], usage: dict[str, Any], extra: dict[str, Any]
    ) -> bytes:
        """A non-streaming body: ``top`` is the chunk prefix (``data: {...,"choices":``)."""
        rest = {
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": usage,
            **extra,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
        tail = orjson.dumps(rest)
        return top[len(b"data: ") :] + orjson.dumps([choice]) + b"," + tail[1:]

    def suffix(self, delta: Delta) -> bytes:
        """The choice's ``token_ids``, then the top-level fields after ``choices`` (usage,
        fingerprint) and the end of the event."""
        ids = orjson.dumps(delta.token_ids) if self.opts.return_token_ids else _NULL
        out = b',"token_ids":' + ids + b"}]"
        if self.opts.continuous_usage:
            out += b',"usage":' + self.usage(delta.num_generated)
        if delta.finish_reason is not None and not self.opts.include_usage:
            out += b',"system_fingerprint":' + orjson.dumps(self.fingerprint)
        return out + b"}\n\n"


class CompletionRenderer(_Common):
    """``/v1/completions`` chunks and body."""

    def __init__(
        self,
        rid: str,
        created: int,
        model: str,
        fingerprint: str,
        prompt_ids: list[int],
        opts: StreamOptions,
        echo_text: str = "",
    ) -> None:
        super().__init__(rid, "text_completion", created, model, fingerprint, prompt_ids, opts)
        self.head = self.top + b'[{"index":0,"text":'
        self.echo_text = echo_text

    def render(self, batch: list[Delta]) -> bytes:
        parts: list[bytes] = []
        rti = self.opts.return_token_ids
        for d in batch:
            text = d.text
            prompt_ids = _NULL
            if self.first:
                self.first = False
                text = self.echo_text + text
                if rti:
                    prompt_ids = orjson.dumps(self.prompt_ids)
            parts += (
                self.head,
                orjson.dumps(text),
                b',"logprobs":null,"finish_reason":',
                _REASON[d.finish_reason],
                b',"stop_reason":',
                json_value(d.stop_reason),
                b',"prompt_token_ids":',
                prompt_ids,
                self.suffix(d),
            )
        return b"".join(parts)

    def body(self, deltas: list[Delta], stream: RequestStream) -> bytes:
        last = deltas[-1]
        rti = self.opts.return_token_ids
        choice = {
            "index": 0,
            "text": self.echo_text + "".join(d.text for d in deltas),
            "logprobs": None,
            "finish_reason": last.finish_reason,
            "stop_reason": last.stop_reason,
            "token_ids": [t for d in deltas for t in d.token_ids] if rti else None,
            "prompt_logprobs": None,
            "prompt_token_ids": self.prompt_ids if rti else None,
            "routed_experts": None,
        }
        return self._body(self.top, choice, self.final_usage(stream, body=True), {})


class ChatRenderer(_Common):
    """``/v1/chat/completions`` chunks (role chunk first) and body."""

    RUNNING_USAGE_TAIL: ClassVar[bytes] = b',"completion_tokens_details":null}'
    STREAM_DETAILS: ClassVar[tuple[tuple[str, Any], ...]] = (("created_cache_tokens", 0),)
    BODY_DETAILS: ClassVar[tuple[tuple[str, Any], ...]] = (
        ("created_cache_tokens", 0),
        ("multimodal_tokens", None),
    )

    def __init__(
        self,
        rid: str,
        created: int,
        model: str,
        fingerprint: str,
        prompt_ids: list[int],
        opts: StreamOptions,
        role: str,
    ) -> None:
        super().__init__(
            rid, "chat.completion.chunk", created, model, fingerprint, prompt_ids, opts
        )
        self.body_top = self.top.replace(b'"chat.completion.chunk"', b'"chat.completion"')
        self.head = self.top + b'[{"index":0,"delta":'
        self.role = role

    def role_chunk(self) -> bytes:
        prompt_ids = orjson.dumps(self.prompt_ids) if self.opts.return_token_ids else _NULL
        usage = b',"usage":' + self.usage(0) if self.opts.continuous_usage else b""
        return b"".join(
            (
                self.head,
                b'{"role":',
                orjson.dumps(self.role),
                b',"content":""},"logprobs":null,"finish_reason":null}]',
                usage,
                b',"prompt_token_ids":',
                prompt_ids,
                b',"prompt_text":null}\n\n',
            )
        )

    def render(self, batch: list[Delta]) -> bytes:
        parts: list[bytes] = []
        if self.first:
            self.first = False
            parts.append(self.role_chunk())
        for d in batch:
            stop = b""
            if d.finish_reason is not None:
                stop = b',"stop_reason":' + json_value(d.stop_reason)
            parts += (
                self.head,
                b'{"content":',
                orjson.dumps(d.text),
                b'},"logprobs":null,"finish_reason":',
                _REASON[d.finish_reason],
                stop,
                self.suffix(d),
            )
        return b"".join(parts)

    def body(self, deltas: list[Delta], stream: RequestStream) -> bytes:
        last = deltas[-1]
        rti = self.opts.return_token_ids
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(d.text for d in deltas),
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": None,
        }
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": last.finish_reason,
            "stop_reason": last.stop_reason,
            "token_ids": [t for d in deltas for t in d.token_ids] if rti else None,
            "routed_experts": None,
        }
        extra = {
            "prompt_logprobs": None,
            "prompt_token_ids": self.prompt_ids if rti else None,
            "prompt_text": None,
        }
        return self._body(self.body_top, choice, self.final_usage(stream, body=True), extra)
