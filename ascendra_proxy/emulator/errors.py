"""Errors of the emulated servers and their wire shapes.

Theory of operation: request parsing and serving code raise :class:`APIError` (status, type,
message, param); one middleware per flavour turns it into the JSON body the real engine would
send.  vLLM wraps the fields in ``{"error": {...}}``; SGLang's OpenAI layer sends them flat with
``"object": "error"``.  Unknown routes and wrong methods get FastAPI's ``{"detail": ...}``
bodies, as both real servers are FastAPI apps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def validation_error(kind: str, loc: str, msg: str, value: Any) -> APIError:
    """A 400 worded like the pydantic validation errors FastAPI servers return."""
    text = f"[{{'type': '{kind}', 'loc': ('body', '{loc}'), 'msg': '{msg}', 'input': {value!r}}}]"
    return APIError(text, 400)


def vllm_error_body(err: APIError) -> bytes:
    fields = {"message": err.message, "type": err.err_type, "param": err.param, "code": err.status}
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
