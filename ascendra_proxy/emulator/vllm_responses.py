"""vLLM's ``POST /v1/responses`` (the OpenAI Responses API), text in and text out.

Theory of operation: ``input`` (a string, or messages whose ``content`` is a string or
``input_text`` parts) plus optional ``instructions`` (a system message) is rendered with the
chat template and generated like a chat request, up to ``max_output_tokens``.  The answer
is one assistant message: a ``response`` object (``status`` ``completed``, or
``incomplete`` with ``incomplete_details.reason = "max_output_tokens"``) whose ``usage``
counts ``input_tokens`` and ``output_tokens``; a stream is vLLM's typed event sequence
(``response.created`` ... ``response.output_text.delta`` per delta ...
``response.completed``, each ``event:`` + ``data:``, numbered by ``sequence_number``).
Tools, reasoning, background mode and stored responses are not emulated.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from aiohttp import web

from ascendra_proxy.emulator.errors import APIError, json_response, validation_error
from ascendra_proxy.emulator.params import Fields, GenParams, read_json
from ascendra_proxy.emulator.serving import CTX, ServerContext, collect, pump_sse
from ascendra_proxy.emulator.stream import Delta, RequestStream
from ascendra_proxy.emulator.vllm_checks import Budget, output_budget


async def responses(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    f = Fields(await read_json(request))
    model = f.get_str("model", None)
    if model and model != ctx.model:
        raise APIError(
            f"The model `{model}` does not exist. Valid aliases: {ctx.model}.", 404, param="model"
        )
    messages = _messages(f)
    try:
        text = ctx.tokenizer.apply_chat_template(messages, True, False)
    except ValueError as exc:
        raise APIError(str(exc), 400) from None
    prompt_ids = ctx.tokenizer.encode(text, add_special_tokens=False)
    budget = Budget(f.get_opt_int("max_output_tokens"), "max_output_tokens")
    params = GenParams(
        prompt_ids=prompt_ids,
        max_tokens=output_budget(ctx.max_model_len, len(prompt_ids), budget),
        min_tokens=0,
        ignore_eos=False,
        stop=(),
        stop_token_ids=(),
        include_stop_str_in_output=False,
        seed=f.get_opt_int("seed"),
        priority=0,
    )
    rid = "resp_" + secrets.token_hex(8)
    renderer = ResponseRenderer(ctx, rid, len(prompt_ids), f.get_opt_int("max_output_tokens"))
    out = await ctx.start(rid, params)
    if f.get_bool("stream", False):
        return await pump_sse(request, ctx, out, renderer.render, lambda: renderer.tail(out))
    deltas = await collect(request, ctx, out)
    text_out = "".join(d.text for d in deltas)
    return json_response(orjson.dumps(renderer.response(text_out, out, final=True)))


def _messages(f: Fields) -> list[dict[str, Any]]:
    given = f.required("input")
    if isinstance(given, str):
        messages = [{"role": "user", "content": given}]
    elif isinstance(given, list) and all(isinstance(m, dict) for m in given):
        messages = [{"role": m.get("role", "user"), "content": _text(m)} for m in given]
    else:
        raise validation_error("list_type", "input", "Input should be a valid list", given)
    instructions = f.get_str("instructions", None)
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    return messages


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


class ResponseRenderer:
    """The Responses API's object and event stream for one request."""

    def __init__(self, ctx: ServerContext, rid: str, prompt_len: int, limit: int | None) -> None:
        self.rid = rid
        self.msg_id = "msg_" + secrets.token_hex(8)
        self.created = ctx.created_now()
        self.model = ctx.model
        self.prompt_len = prompt_len
        self.limit = limit
        self.seq = 0
        self.text: list[str] = []

    def response(self, text: str, stream: RequestStream | None, final: bool) -> dict[str, Any]:
        done = final and stream is not None
        cut = done and stream is not None and stream.finish_reason == "length"
        output = []
        if final:
            output = [self._message(text, "completed")]
        generated = stream.num_generated if stream is not None else 0
        return {
            "id": self.rid,
            "created_at": self.created,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": None,
            "metadata": None,
            "model": self.model,
            "object": "response",
            "output": output,
            "max_output_tokens": self.limit,
            "status": ("incomplete" if cut else "completed") if done else "in_progress",
            "usage": {
                "input_tokens": self.prompt_len,
                "output_tokens": generated,
                "total_tokens": self.prompt_len + generated,
            }
            if done
            else None,
        }

    def _message(self, text: str, status: str) -> dict[str, Any]:
        part: dict[str, Any] = {
            "annotations": [],
            "text": text,
            "type": "output_text",
            "logprobs": None,
        }
        return {
            "id": self.msg_id,
            "content": [part] if text or status == "completed" else [],
            "role": "assistant",
            "status": status,
            "type": "message",
        }

    def _event(self, kind: str, body: dict[str, Any]) -> bytes:
        body = {**body, "sequence_number": self.seq, "type": kind}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def _item(self) -> dict[str, Any]:
        return {"item_id": self.msg_id, "output_index": 0, "content_index": 0}

    def render(self, batch: list[Delta]) -> bytes:
        parts: list[bytes] = []
        if self.seq == 0:
            head = self.response("", None, final=False)
            parts.append(self._event("response.created", {"response": head}))
            parts.append(self._event("response.in_progress", {"response": head}))
            item = self._message("", "in_progress")
            parts.append(
                self._event("response.output_item.added", {"item": item, "output_index": 0})
            )
            part: dict[str, Any] = {
                "annotations": [],
                "text": "",
                "type": "output_text",
                "logprobs": [],
            }
            parts.append(self._event("response.content_part.added", {**self._item(), "part": part}))
        for d in batch:
            if d.text:
                self.text.append(d.text)
                body = {**self._item(), "delta": d.text, "logprobs": []}
                parts.append(self._event("response.output_text.delta", body))
        return b"".join(parts)

    def tail(self, stream: RequestStream) -> bytes:
        text = "".join(self.text)
        part: dict[str, Any] = {
            "annotations": [],
            "text": text,
            "type": "output_text",
            "logprobs": None,
        }
        final = self.response(text, stream, final=True)
        kind = "response.completed"  # vLLM's last event, also for an incomplete answer
        return b"".join(
            (
                self._event("response.output_text.done", {**self._item(), "text": text}),
                self._event("response.content_part.done", {**self._item(), "part": part}),
                self._event(
                    "response.output_item.done",
                    {"item": self._message(text, "completed"), "output_index": 0},
                ),
                self._event(kind, {"response": final}),
            )
        )
