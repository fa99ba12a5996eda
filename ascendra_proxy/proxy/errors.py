"""The proxy's edge: every failure becomes one OpenAI-shaped JSON error, here and only here.

Theory of operation: code below the handlers raises ``ApiError`` (client-facing problems it
has already classified: bad input, auth, limits, no capacity) or lets ``UpstreamError``
(``backends/errors.py``) and aiohttp's own ``HTTPException`` (unknown route, wrong method)
escape.  ``error_middleware`` catches them once and answers
``{"error": {"message", "type", "param", "code"}}`` with the right status.  An unexpected
exception is logged and answered 500 without internals.  Streams that already sent their
200 never reach this layer with an error: the stream pump reports those in-stream.

Statuses: 400 bad input, 401 missing/wrong key, 403 admin disabled, 404 unknown model or
route, 405 wrong method, 413 body too large, 429 proxy queue full (with ``Retry-After``), 502
every tried backend failed, 503 no healthy backend (with ``Retry-After``), 504 timed out in
the proxy queue.  A 5xx body names a backend by its configured name only (never its URL or
the engine's own text; the log keeps those).
Upstream 4xx answers are passed through unchanged with the engine's own body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from ascendra_proxy.backends import errors as up

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}
RETRY_AFTER_S = 1


class ApiError(Exception):
    """A classified client-facing error (status + OpenAI error fields)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | int | None = None,
        param: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or _TYPES.get(status, "invalid_request_error")
        self.headers = dict(headers or {})
        if status in (429, 503):  # the proxy's own "come back later" answers
            self.headers.setdefault("Retry-After", str(RETRY_AFTER_S))

    def body(self) -> bytes:
        return error_json(self.message, self.type, self.param, self.code)

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=self.body(),
            content_type="application/json",
            headers=self.headers,
        )


def error_json(message: str, type_: str, param: str | None, code: str | int | None) -> bytes:
    error = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    try:
        return orjson.dumps(error)
    except orjson.JSONEncodeError:  # a message quoting undecodable client bytes (surrogates)
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        param = None if param is None else param.encode("utf-8", "backslashreplace").decode()
        return error_json(message, type_, param, code)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def from_upstream(exc: up.UpstreamError) -> web.Response:
    """The answer for an upstream failure that reached the edge (nothing sent yet)."""
    if isinstance(exc, up.UpstreamRejected):
        return web.Response(
            status=exc.status, body=exc.body, headers={"Content-Type": exc.content_type}
        )
    log.warning("upstream failure answered 502: %s", exc)  # the detail stays in the log
    return ApiError(502, f"upstream failure: {exc.public}", code=exc.kind).response()


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        return exc
    status = exc.status
    if status == 413:
        message = "request body too large"
    elif status == 404:
        message = "not found"
    elif status == 405:
        message = "method not allowed"
    else:
        message = exc.reason or "error"
    code = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}.get(status)
    return ApiError(status, message, code=code).response()


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except up.UpstreamError as exc:
        return from_upstream(exc)
    except web.HTTPException as exc:
        return _from_http_exception(exc)
    except web.RequestPayloadError as exc:  # a body aiohttp could not decode: the client's
        log.debug("unreadable request body on %s: %s", request.path, exc)
        return ApiError(400, "request body could not be read", code="invalid_body").response()
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return ApiError(500, "internal proxy error", code="internal_error").response()
