"""Parsing and validating client request bodies (OpenAI completions and chat).

Theory of operation: the proxy checks only what it must understand itself: the body is a
JSON object, ``model`` names a served model, the prompt or messages have a usable shape,
``stream``/``stream_options``/``max_tokens``/``n`` have the right types.  Everything else
(sampling parameters, engine extras) is forwarded untouched and judged by the engine, whose
4xx answers reach the client unchanged.  Problems raise ``ApiError`` (400, or 404 for an
unknown model) naming the offending field in ``param``.

The prompt length is estimated here (exact for token-id prompts, about four bytes per token
for text) so a policy has a size before the engine reports the exact count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.proxy.errors import ApiError, bad_request

BYTES_PER_TOKEN = 4
CHAT_MESSAGE_OVERHEAD = 4
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's default for /v1/completions


@dataclass(slots=True)
class GenerationRequest:
    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None  # None: the engine's default (chat: up to the context limit)
    prompt_tokens: int
    prompt_exact: bool


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None
    if type(body) is not dict:
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def validate(endpoint: Endpoint, body: dict[str, Any], models: frozenset[str]) -> GenerationRequest:
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", "model", "missing_field")
    if type(model) is not str:
        raise bad_request("model must be a string", "model", "invalid_type")
    if model not in models:
        known = ", ".join(sorted(models))
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Served models: {known}.",
            code="model_not_found",
            param="model",
        )
    stream = _optional_bool(body, "stream")
    _check_stream_options(body, stream)
    _optional_int(body, "n", minimum=1)
    max_tokens = _max_tokens(endpoint, body)
    if endpoint is Endpoint.CHAT:
        tokens, exact = _chat_prompt_tokens(body)
    else:
        tokens, exact = _completion_prompt_tokens(body)
    return GenerationRequest(endpoint, body, model, stream, max_tokens, tokens, exact)


def _optional_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if type(value) is not bool:
        raise bad_request(f"{key} must be a boolean", key, "invalid_type")
    return value


def _optional_int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise bad_request(f"{key} must be an integer", key, "invalid_type")
    if value < minimum:
        raise bad_request(f"{key} must be >= {minimum}, got {value}", key)
    return value


def _check_stream_options(body: dict[str, Any], stream: bool) -> None:
    options = body.get("stream_options")
    if options is None:
        return
    if type(options) is not dict:
        raise bad_request("stream_options must be an object", "stream_options", "invalid_type")
    if not stream:
        raise bad_request("stream_options can only be set when stream is true", "stream_options")
    for key in ("include_usage", "continuous_usage_stats"):
        if options.get(key) is not None and type(options[key]) is not bool:
            raise bad_request(f"stream_options.{key} must be a boolean", "stream_options")


def _max_tokens(endpoint: Endpoint, body: dict[str, Any]) -> int | None:
    given = _optional_int(body, "max_tokens", minimum=0)
    if endpoint is Endpoint.CHAT:
        newer = _optional_int(body, "max_completion_tokens", minimum=0)
        return newer if newer is not None else given
    return COMPLETIONS_DEFAULT_MAX_TOKENS if given is None else given


def _text_tokens(text: str) -> int:
    return max(1, (len(text.encode()) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN)


def _completion_prompt_tokens(body: dict[str, Any]) -> tuple[int, bool]:
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("you must provide a prompt", "prompt", "missing_field")
    if type(prompt) is str:
        return _text_tokens(prompt), False
    if type(prompt) is not list or not prompt:
        raise bad_request(
            "prompt must be a string, a list of strings or a list of token ids", "prompt"
        )
    if all(type(t) is int for t in prompt):
        return len(prompt), True
    if all(type(p) is str for p in prompt):
        return sum(_text_tokens(p) for p in prompt), False
    if all(type(p) is list and p and all(type(t) is int for t in p) for p in prompt):
        return sum(len(p) for p in prompt), True
    raise bad_request("prompt must be a string, a list of strings or a list of token ids", "prompt")


def _chat_prompt_tokens(body: dict[str, Any]) -> tuple[int, bool]:
    messages = body.get("messages")
    if messages is None:
        raise bad_request("you must provide messages", "messages", "missing_field")
    if type(messages) is not list or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    total = 0
    for i, msg in enumerate(messages):
        if type(msg) is not dict or type(msg.get("role")) is not str:
            raise bad_request(f"messages[{i}] must be an object with a role", f"messages[{i}]")
        total += CHAT_MESSAGE_OVERHEAD + _content_tokens(msg.get("content"))
    return total, False


def _content_tokens(content: Any) -> int:
    if type(content) is str:
        return _text_tokens(content)
    if type(content) is list:
        return sum(
            _text_tokens(part["text"])
            for part in content
            if type(part) is dict and type(part.get("text")) is str
        )
    return 0
