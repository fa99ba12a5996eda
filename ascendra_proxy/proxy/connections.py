"""Client connections: timeouts, a cap, and OpenAI-shaped answers to unparseable requests.

Theory of operation: aiohttp's ``RequestHandler`` is the protocol of one client connection.
``GuardedRequestHandler`` adds what the proxy needs at that level and nothing else:

- **a cap** (``connections.max_connections``): a connection beyond it is answered ``503``
  (JSON, ``Retry-After``) and closed before a byte of it is read;
- **a header-read timeout** (``header_timeout_s``): from the moment a connection opens, or
  the first byte of a request arrives on an idle keep-alive connection, until that request's
  headers are complete.  A client that trickles its headers (slowloris) is answered ``408``
  and dropped; aiohttp itself would hold it until the idle timeout, however slowly it sends;
- **a keep-alive idle timeout** (``idle_timeout_s``): aiohttp's own ``keepalive_timeout``;
- **framing errors as JSON**: whatever aiohttp's HTTP parser rejects (bad request line,
  header bytes, chunk framing, oversized lines) never reaches the app's middleware; aiohttp
  answers it through ``handle_error`` with plain text and logs a traceback.  Here it becomes
  an OpenAI-shaped ``400`` with one log line at debug level.

The body-read timeout (``body_timeout_s``) is applied where the body is read, by the
handlers (``read_body``).  ``GuardedTCPSite`` listens with this protocol; ``start_server``
uses it.  Everything here is per connection and costs nothing per streamed chunk.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ascendra_proxy.config import ConnectionsConfig
from ascendra_proxy.proxy.errors import ApiError, error_json
from ascendra_proxy.proxy.telemetry import ConnectionCounts

log = logging.getLogger(__name__)

MAX_ERROR_TEXT = 200  # parser messages echo the offending bytes; keep the first line, short


def canned_response(status: int, reason: str, body: bytes, retry_after: bool = False) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response, for a connection no handler owns."""
    extra = "Retry-After: 1\r\n" if retry_after else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionGuard:
    """The settings and the counts (``ConnectionCounts``, exported by telemetry) shared by
    every connection of one listener."""

    def __init__(self, cfg: ConnectionsConfig, counts: ConnectionCounts | None = None) -> None:
        self.cfg = cfg
        self.counts = ConnectionCounts() if counts is None else counts
        self.too_many = canned_response(
            503,
            "Service Unavailable",
            error_json(
                f"too many open connections (limit {cfg.max_connections})",
                "service_unavailable",
                None,
                "too_many_connections",
            ),
            retry_after=True,
        )
        self.header_timeout = canned_response(
            408,
            "Request Timeout",
            error_json(
                f"request headers not received within {cfg.header_timeout_s:g} s",
                "invalid_request_error",
                None,
                "header_timeout",
            ),
        )

    def handler_kwargs(self) -> dict[str, Any]:
        return {"keepalive_timeout": self.cfg.idle_timeout_s, "access_log": None}


class GuardedRequestHandler(web.RequestHandler):
    __slots__ = ("_counted", "_guard", "_header_deadline", "_requests_at_arming")

    def __init__(
        self,
        manager: web.Server,
        guard: ConnectionGuard,
        *,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._guard = guard
        self._counted = False
        self._header_deadline: asyncio.TimerHandle | None = None
        self._requests_at_arming = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard
        counts = guard.counts
        if counts.open >= guard.cfg.max_connections:
            counts.dropped["too_many_connections"] += 1
            cast(asyncio.WriteTransport, transport).write(guard.too_many)
            self.force_close()  # the handler loop sees it and never reads a request
            return
        counts.open += 1
        self._counted = True
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._guard.counts.open -= 1
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self._idle():
            self._arm_header_deadline()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self._header_deadline is not None and self._request_count != self._requests_at_arming:
            self._disarm_header_deadline()  # the request's headers are complete

    def _idle(self) -> bool:
        """Waiting for the next request (aiohttp's own test of an idle connection)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_header_deadline(self) -> None:
        self._requests_at_arming = self._request_count
        when = self._loop.time() + self._guard.cfg.header_timeout_s
        self._header_deadline = self._loop.call_at(when, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self._request_count != self._requests_at_arming or self.transport is None:
            return
        self._guard.counts.dropped["header_timeout"] += 1
        if self._idle():  # nothing is being written: a last word before hanging up
            self.transport.write(self._guard.header_timeout)
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A body aiohttp could not decode while draining it after a refusal is the client's
        fault: one line at debug level, no traceback (anything else is logged as aiohttp does)."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError | HttpProcessingError):
            log.debug("unreadable request body: %s", _first_line(str(exc)))
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (or a handler that crashed)."""
        if status >= 500:
            log.warning("error serving %s: %s: %s", request.remote, type(exc).__name__, exc)
            error = ApiError(500, "internal proxy error", code="internal_error")
        else:
            text = _first_line(message or (exc and str(exc)) or "malformed HTTP request")
            log.debug("malformed request from %s: %s", request.remote, text)
            self._guard.counts.dropped["malformed_request"] += 1
            error = ApiError(status, f"malformed HTTP request: {text}", code="bad_http_request")
        if request.writer.output_size > 0:  # as aiohttp: a started answer cannot be replaced
            raise ConnectionError("response already started; cannot send the error")
        resp = error.response()
        resp.force_close()
        return resp


_STATUS_PREFIX = re.compile(r"^\d{3}, message:?$")  # how aiohttp's parser errors print


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not _STATUS_PREFIX.match(ln)]
    line = lines[0].rstrip(":") if lines else "malformed HTTP request"
    return line if len(line) <= MAX_ERROR_TEXT else line[:MAX_ERROR_TEXT] + "..."


class GuardedTCPSite(web.TCPSite):
    """A TCP listener whose connections are ``GuardedRequestHandler``s."""

    __slots__ = ("guard",)

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        backlog: int,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog, reuse_port=reuse_port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        guard, kwargs = self.guard, self.guard.handler_kwargs()

        def protocol() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, guard, loop=loop, **kwargs)

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_port=self._reuse_port
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


FILES_RESERVED = 256  # descriptors kept for backend connections, logs, model files


def open_file_warning(cfg: ConnectionsConfig) -> str | None:
    """Why ``max_connections`` cannot be reached under this process's open-file limit, if so:
    past the limit, accepts fail (and are retried) instead of getting the cap's 503."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to compare with
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or cfg.max_connections + FILES_RESERVED <= soft:
        return None
    return (
        f"connections.max_connections is {cfg.max_connections} but the open-file limit is "
        f"{soft}: raise it (ulimit -n) to at least {cfg.max_connections + FILES_RESERVED} "
        "or lower the cap"
    )


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The request body within ``timeout_s``; undecodable or cut bodies are a 400, not a 500."""
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise ApiError(
            408, f"request body not received within {timeout_s:g} s", code="body_timeout"
        ) from None
    except web.RequestPayloadError as exc:
        text = _first_line(str(exc.__cause__ or exc))
        raise ApiError(
            400, f"request body could not be read: {text}", code="invalid_body"
        ) from None
