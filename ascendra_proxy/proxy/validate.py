"""Parsing and validating client request bodies (OpenAI completions and chat).

Theory of operation: the proxy checks only what it must understand itself: the body is a
JSON object, ``model`` names a served model, the prompt or messages have a usable shape,
``stream``/``stream_options``/``max_tokens``/``n`` have the right types.  Everything else
(sampling parameters, engine extras) is forwarded untouched and judged by the engine, whose
4xx answers reach the client unchanged.  Problems raise ``ApiError`` shaped as vLLM (0.32)
answers the same mistake, so a client sees one error vocabulary whether or not the proxy is
in front: a model not served is 404 ``NotFoundError`` (code 404, param ``model``); what vLLM's
own checks refuse (empty messages, ``n`` or ``max_tokens`` below 1, ``stream_options``
without a stream, a missing prompt) is 400 ``BadRequestError`` with vLLM's message and param;
a field of the wrong type or a missing field is vLLM's schema error (400, type ``Bad
Request``, param ``body.<field>``).  ``code`` is the HTTP status, as in vLLM.  A missing or
empty ``model`` names the one served model, as vLLM; with several served models it is a 400.

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
    model = served_model(body, models)
    stream = _optional_bool(body, "stream")
    _check_stream_options(body, stream)
    n = _optional_int(body, "n")
    if n is not None and n < 1:
        raise vllm_error(f"n must be at least 1, got {n}.")
    max_tokens = _max_tokens(endpoint, body)
    if endpoint is Endpoint.CHAT:
        tokens, exact = _chat_prompt_tokens(body)
    else:
        tokens, exact = _completion_prompt_tokens(body)
    return GenerationRequest(endpoint, body, model, stream, max_tokens, tokens, exact)


def vllm_error(message: str, param: str | None = None) -> ApiError:
    """A request vLLM's own checks refuse: its ``BadRequestError`` shape, code 400."""
    return ApiError(400, message, code=400, param=param, type_="BadRequestError")


def schema_error(field: str, kind: str, msg: str, value: Any) -> ApiError:
    """A field of the wrong type or missing: vLLM's request-schema error (FastAPI's
    validation, ``type: "Bad Request"``, ``param: "body.<field>"``), one error."""
    loc = f"body.{field}"
    detail = {"type": kind, "loc": loc, "msg": msg, "input": _summary(value)}
    message = f"1 validation error:\n  {detail}"
    return ApiError(400, message, code=400, param=loc, type_="Bad Request")


def _summary(value: Any) -> str:
    """The ``input`` of a schema error as vLLM shows it: strings cut, containers described."""
    if isinstance(value, list | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "...[truncated]"


def served_model(body: dict[str, Any], models: frozenset[str]) -> str:
    """The served model the request names.  As vLLM, a missing or empty ``model`` means the
    one served model (written into the body so the engine sees its name)."""
    model = body.get("model")
    if model is None or model == "":
        if len(models) != 1:
            known = ", ".join(sorted(models))
            raise vllm_error(f"This server serves several models ({known}): name one.", "model")
        (model,) = models
        body["model"] = model
        return model
    if type(model) is not str:
        raise schema_error("model", "string_type", "Input should be a valid string", model)
    if model not in models:
        known = ", ".join(sorted(models))
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Valid aliases: {known}.",
            code=404,
            param="model",
            type_="NotFoundError",
        )
    return model


def _optional_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if type(value) is not bool:
        msg = "Input should be a valid boolean, unable to interpret input"
        raise schema_error(key, "bool_parsing", msg, value)
    return value


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise schema_error(key, "int_type", "Input should be a valid integer", value)
    return value


def _check_stream_options(body: dict[str, Any], stream: bool) -> None:
    options = body.get("stream_options")
    if options is None:
        return
    if type(options) is not dict:
        msg = "Input should be a valid dictionary or instance of StreamOptions"
        raise schema_error("stream_options", "model_type", msg, options)
    if not stream:
        raise vllm_error(
            "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
            "stream_options",
        )
    for key in ("include_usage", "continuous_usage_stats"):
        if options.get(key) is not None and type(options[key]) is not bool:
            msg = "Input should be a valid boolean"
            raise schema_error(f"stream_options.{key}", "bool_type", msg, options[key])


def _max_tokens(endpoint: Endpoint, body: dict[str, Any]) -> int | None:
    given = _optional_int(body, "max_tokens")
    if endpoint is Endpoint.CHAT:
        newer = _optional_int(body, "max_completion_tokens")
        given = newer if newer is not None else given
    elif given is None:
        given = COMPLETIONS_DEFAULT_MAX_TOKENS
    if given is not None and given < 1:  # vLLM's message names max_tokens for both fields
        raise vllm_error(
            f"max_tokens must be at least 1, got {given}. (parameter=max_tokens, value={given})",
            "max_tokens",
        )
    return given


def _text_tokens(text: str) -> int:
    return max(1, (len(text.encode()) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN)


_PROMPT_SHAPE = "prompt must be a string, a list of strings or a list of token ids"


def _completion_prompt_tokens(body: dict[str, Any]) -> tuple[int, bool]:
    prompt = body.get("prompt")
    if prompt is None:
        raise vllm_error(
            "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
            "prompt",
        )
    if type(prompt) is str:
        return _text_tokens(prompt), False
    if type(prompt) is list and not prompt:
        raise vllm_error("You must pass at least one prompt")
    if type(prompt) is not list:
        raise vllm_error(_PROMPT_SHAPE, "prompt")
    if all(type(t) is int for t in prompt):
        return len(prompt), True
    if all(type(p) is str for p in prompt):
        return sum(_text_tokens(p) for p in prompt), False
    if all(type(p) is list and p and all(type(t) is int for t in p) for p in prompt):
        return sum(len(p) for p in prompt), True
    raise vllm_error(_PROMPT_SHAPE, "prompt")


def _chat_prompt_tokens(body: dict[str, Any]) -> tuple[int, bool]:
    messages = body.get("messages")
    if messages is None:
        raise schema_error("messages", "missing", "Field required", body)
    if type(messages) is not list:
        raise schema_error("messages", "list_type", "Input should be a valid list", messages)
    if not messages:
        raise vllm_error(
            "Cannot apply chat template to an empty conversation. Provide at least one message."
        )
    total = 0
    for i, msg in enumerate(messages):
        if type(msg) is not dict or type(msg.get("role")) is not str:
            raise schema_error(f"messages.{i}.role", "missing", "Field required", msg)
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
