"""The engine adapter protocol: what the proxy needs from each kind of engine.

Theory of operation: a request reaches an adapter as the client's parsed JSON body.  The
adapter builds the upstream request (``prepare``): a copy of the body plus what the proxy
needs to see every token (engine-specific), minus nothing the client sent, and records what
the client itself asked for (``ClientAsks``) so the stream can be stripped back to exactly
that.  ``abort`` releases the engine's slot for a request the proxy gave up on; for engines
where closing the connection is the abort it does nothing.  ``metrics_path``/``health_path``
tell the background monitors where to look, and ``parse_metrics`` reads the engine's
Prometheus names.

Adapters are stateless and shared; the per-backend connection pool lives in the backend
runtime (``proxy/runtime.py``) and is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
import orjson

from ascendra_proxy.backends.chunks import ClientAsks
from ascendra_proxy.backends.scrape import EngineLoad


class Endpoint(StrEnum):
    COMPLETIONS = "/v1/completions"
    CHAT = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    path: str
    body: bytes
    request_id: str
    stream: bool
    asks: ClientAsks


class EngineAdapter(Protocol):
    engine: str
    metrics_path: str
    health_path: str
    needs_abort_call: bool  # closing the connection is not enough to free the engine slot

    def prepare(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        request_id: str,
        priority: int | None = None,
    ) -> UpstreamRequest: ...

    async def abort(
        self, session: aiohttp.ClientSession, base_url: str, request_id: str
    ) -> None: ...

    def parse_metrics(self, text: str) -> EngineLoad: ...


class OpenAIStreamAdapter:
    """Shared request building for engines speaking OpenAI streams with token-id extras.

    Subclasses set ``engine`` and may add fields in ``_extra_fields``.
    """

    engine = "openai"
    metrics_path = "/metrics"
    health_path = "/health"
    needs_abort_call = False

    def prepare(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        request_id: str,
        priority: int | None = None,
    ) -> UpstreamRequest:
        stream = body.get("stream") is True
        upstream = dict(body)
        asks = client_asks(body) if stream else ClientAsks(True, True, True)
        if stream:
            upstream["return_token_ids"] = True
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            options["continuous_usage_stats"] = True
            upstream["stream_options"] = options
        if priority is not None:
            upstream["priority"] = self.engine_priority(priority)
        request_id = self._extra_fields(upstream, request_id)
        return UpstreamRequest(
            path=endpoint.value,
            body=orjson.dumps(upstream),
            request_id=request_id,
            stream=stream,
            asks=asks,
        )

    def engine_priority(self, priority: int) -> int:
        """A priority in vLLM's convention (lower runs first) in this engine's convention."""
        return priority

    def _extra_fields(self, upstream: dict[str, Any], request_id: str) -> str:
        """Add engine-specific fields; returns the id the engine will know the request by."""
        return request_id

    async def abort(self, session: aiohttp.ClientSession, base_url: str, request_id: str) -> None:
        return None


def client_asks(body: dict[str, Any]) -> ClientAsks:
    """What a streaming client asked for itself (before the proxy adds its own fields)."""
    options = body.get("stream_options")
    include = continuous = False
    if isinstance(options, dict):
        include = options.get("include_usage") is True
        continuous = include and options.get("continuous_usage_stats") is True
    return ClientAsks(
        token_ids=body.get("return_token_ids") is True,
        include_usage=include,
        continuous_usage=continuous,
    )
