"""The exception tree for everything that can go wrong between the proxy and a backend.

Theory of operation: the adapters and the upstream attempt code translate aiohttp errors,
HTTP statuses and in-stream error events into these classes exactly once, at the backend
boundary.  Everything above (retry loop, stream pump, error edge) decides on the *class*,
never on aiohttp types or status numbers:

```
UpstreamError                      base; carries the backend name
├── UpstreamUnavailable            nothing usable came back; safe to retry elsewhere
│   ├── ConnectFailed              TCP connect / DNS / TLS failed
│   ├── CircuitOpen                the breaker refused to try this backend
│   ├── UpstreamServerError        HTTP 5xx (or 429) before any body byte
│   └── FirstByteTimeout           no first event within timeouts.first_byte_s
├── UpstreamRejected               HTTP 4xx: a bad request; passed through, never retried
├── AttemptClosed                  the proxy closed the attempt before it answered (a move)
└── StreamBroken                   the stream failed after it started
    ├── StreamInterrupted          connection dropped or ended without [DONE]
    ├── StreamIdleTimeout          no bytes for timeouts.idle_s
    ├── StreamTotalTimeout         the whole request exceeded timeouts.total_s
    ├── InStreamError              the engine sent an error event after the 200
    └── UpstreamProtocolError      the bytes were not the SSE/JSON we expect
```

Whether a ``StreamBroken`` can still be retried transparently depends on whether the
*client* has seen a byte yet; the stream pump knows that, these classes do not.

``message`` keeps the detail for the log (addresses, the engine's own error text);
``public`` is what a client may read: the backend's configured name and a fixed summary of
the class (plus the HTTP status of a 5xx), never a URL or upstream bytes.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """A failure talking to one backend."""

    kind = "upstream_error"
    summary = "failed"

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message

    @property
    def public(self) -> str:
        """For client-facing bodies: the configured backend name and the class summary."""
        return f"backend {self.backend!r}: {self.summary}"


class UpstreamUnavailable(UpstreamError):
    """The backend produced nothing usable; another backend may serve the request."""

    kind = "unavailable"
    summary = "unavailable"


class ConnectFailed(UpstreamUnavailable):
    kind = "connect_failed"
    summary = "connection failed"


class CircuitOpen(UpstreamUnavailable):
    kind = "circuit_open"
    summary = "circuit breaker open"


class UpstreamServerError(UpstreamUnavailable):
    """HTTP 5xx (or 429 overload) answered before any body byte was forwarded."""

    kind = "server_error"

    def __init__(self, backend: str, status: int, body: bytes) -> None:
        super().__init__(backend, f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body

    @property
    def summary(self) -> str:  # type: ignore[override]
        return f"answered HTTP {self.status}"


class FirstByteTimeout(UpstreamUnavailable):
    kind = "first_byte_timeout"
    summary = "no answer within the first-byte budget"


class AttemptClosed(UpstreamError):
    """The proxy itself closed the attempt before the backend answered (a policy ``Move`` or
    ``Drop``): not the backend's fault, nothing to count against it."""

    kind = "closed"
    summary = "attempt closed by the proxy"


class UpstreamRejected(UpstreamError):
    """HTTP 4xx: passed to the client unchanged (status, body, content type)."""

    kind = "rejected"
    summary = "rejected the request"

    def __init__(self, backend: str, status: int, body: bytes, content_type: str) -> None:
        super().__init__(backend, f"HTTP {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


class StreamBroken(UpstreamError):
    """The stream failed after the upstream answered 200."""

    kind = "stream_broken"
    summary = "stream broken"


class StreamInterrupted(StreamBroken):
    kind = "interrupted"
    summary = "stream interrupted"


class StreamIdleTimeout(StreamBroken):
    kind = "idle_timeout"
    summary = "no bytes within the idle budget"


class StreamTotalTimeout(StreamBroken):
    kind = "total_timeout"
    summary = "total time budget exhausted"


class InStreamError(StreamBroken):
    """An ``{"error": ...}`` event inside a 200 stream.  ``status`` is the error's code, if any."""

    kind = "in_stream_error"
    summary = "sent an error event"

    def __init__(self, backend: str, message: str, status: int | None, payload: bytes) -> None:
        super().__init__(backend, message)
        self.status = status
        self.payload = payload

    @property
    def is_client_error(self) -> bool:
        """A 4xx-coded error is about the request and would fail anywhere."""
        return self.status is not None and 400 <= self.status < 500


class UpstreamProtocolError(StreamBroken):
    kind = "protocol_error"
    summary = "sent bytes that are not the expected stream"
