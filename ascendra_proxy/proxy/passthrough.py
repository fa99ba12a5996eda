"""Endpoints relayed to an engine serving the model, outside the scheduler: ``/tokenize``,
``/detokenize``, ``/v1/responses`` (streaming or not), and the engines' model cards.

Theory of operation: these requests are not generation the policy schedules (tokenizing is
cheap; the Responses API has its own event stream the stream pump does not speak), so the
proxy checks the client key and the model (as for completions: a missing or empty ``model``
names the one served model, an unknown one is vLLM's 404), then relays the body to a healthy
backend serving the model, the least loaded first, and the answer back unchanged: status,
content type, body, and for a stream every byte as it arrives.  A backend that cannot be
reached or answers 5xx (or a redirect, never followed) is skipped for the next one; an
engine's 4xx is the client's answer.  Tokens a Responses answer generated (``usage.output_tokens``,
of the body or of the stream's final ``response.*`` event) count in
``streamed_tokens_total{backend}``; each relay ends once in
``relayed_requests_total{endpoint,outcome}``.  Relayed generation is invisible to the
proxy's in-flight counts, so the policy does not see its load.

``GET /v1/models`` and ``GET /v1/models/{id}`` answer every served model with the card its
engine reports (``max_model_len``, ``root``, ``parent``, ``permission``, ...), fetched from a
healthy backend serving it and cached for ``CARD_TTL_S`` (a stale card is kept while no
engine answers); a model no backend has described gets a minimal card.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ascendra_proxy.backends.sse import SSEDecoder, SSEOverflow
from ascendra_proxy.proxy.errors import ApiError
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.keys import CONTEXT, GATEWAY
from ascendra_proxy.proxy.runtime import BackendRuntime
from ascendra_proxy.proxy.stream import SSE_HEADERS, client_fault
from ascendra_proxy.proxy.validate import parse_body, served_model

CARD_TTL_S = 60.0
CARD_TIMEOUT_S = 5.0
_FINAL_EVENTS = (b"response.completed", b"response.incomplete", b"response.failed")


async def tokenize(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/tokenize")


async def detokenize(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/detokenize")


async def responses(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/responses")


async def relay(request: web.Request, path: str) -> web.StreamResponse:
    """Relay one request to a backend serving its model; ends once in the relay counter."""
    ctx, gw = request.app[CONTEXT], request.app[GATEWAY]
    ctx.auth.check_client(request)
    body = parse_body(await request.read())
    model = served_model(body, ctx.models)
    data = orjson.dumps(body)
    outcome = "backend_failed"
    try:
        for backend in candidates(gw, model):
            resp = await _send(backend, path, data, gw)
            if resp is None:
                continue
            async with resp:
                if resp.status >= 500 or 300 <= resp.status < 400:
                    gw.telemetry.upstream_error(backend.name, f"http_{resp.status}")
                    continue
                outcome = "client_error" if client_fault(resp.status) else "completed"
                if resp.status == 200 and _is_stream(resp):
                    out, outcome = await _relay_stream(request, resp, backend, gw)
                    return out
                return await _relay_body(resp, backend, gw)
        raise ApiError(502, f"no backend serving {model!r} answered", code="upstream_error")
    except asyncio.CancelledError:
        outcome = "client_disconnected"
        raise
    finally:
        gw.telemetry.relayed_done(path, outcome)


def candidates(gw: Gateway, model: str) -> list[BackendRuntime]:
    """Backends serving ``model``: those the breaker lets through, least loaded first."""
    now = gw.clock()
    serving = [b for b in gw.backends if b.cfg.model == model]
    healthy = [b for b in serving if b.breaker.available(now)]
    if not serving:
        raise ApiError(503, f"no backend serves {model!r}", code="no_backend")
    return sorted(healthy or serving, key=lambda b: b.inflight)


async def _send(
    backend: BackendRuntime, path: str, data: bytes, gw: Gateway
) -> aiohttp.ClientResponse | None:
    t = gw.cfg.timeouts
    timeout = aiohttp.ClientTimeout(
        total=t.total_s, sock_connect=t.connect_s, sock_read=max(t.first_byte_s, t.idle_s)
    )
    try:
        return await backend.session.post(
            backend.url + path,
            data=data,
            headers=backend.headers,
            timeout=timeout,
            allow_redirects=False,  # a 3xx is this backend's failure, never a new target
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        gw.telemetry.upstream_error(backend.name, type(exc).__name__)
        return None


def _is_stream(resp: aiohttp.ClientResponse) -> bool:
    return resp.headers.get("Content-Type", "").startswith("text/event-stream")


async def _relay_body(
    resp: aiohttp.ClientResponse, backend: BackendRuntime, gw: Gateway
) -> web.Response:
    body = await resp.read()
    if resp.status == 200:
        _count_tokens(gw, backend, _output_tokens(body))
    ctype = resp.headers.get("Content-Type", "application/json")
    return web.Response(status=resp.status, body=body, headers={"Content-Type": ctype})


async def _relay_stream(
    request: web.Request, resp: aiohttp.ClientResponse, backend: BackendRuntime, gw: Gateway
) -> tuple[web.StreamResponse, str]:
    """Every byte as it arrives; returns the response and the relay's outcome (a broken
    upstream body can only be cut short: the client already has its 200)."""
    out = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await out.prepare(request)
    decoder = SSEDecoder()
    tokens = 0
    outcome = "completed"
    try:
        async for data in resp.content.iter_any():
            try:
                await out.write(data)
            except ConnectionResetError:  # the client went away while we wrote
                return out, "client_disconnected"
            try:
                events = decoder.feed(data)
            except SSEOverflow:
                continue  # relayed anyway; only the token count would have used it
            for payload in events:
                if any(e in payload for e in _FINAL_EVENTS):
                    tokens = _output_tokens(payload, nested="response") or tokens
    except (aiohttp.ClientError, TimeoutError) as exc:
        gw.telemetry.upstream_error(backend.name, type(exc).__name__)
        outcome = "backend_failed"
    _count_tokens(gw, backend, tokens)
    await out.write_eof()
    return out, outcome


def _output_tokens(payload: bytes, nested: str | None = None) -> int:
    """``usage.output_tokens`` of a Responses answer (or of ``payload[nested]``), else 0."""
    try:
        obj: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return 0
    if nested is not None and isinstance(obj, dict):
        obj = obj.get(nested)
    usage = obj.get("usage") if isinstance(obj, dict) else None
    n = usage.get("output_tokens") if isinstance(usage, dict) else None
    return n if type(n) is int and n > 0 else 0


def _count_tokens(gw: Gateway, backend: BackendRuntime, tokens: int) -> None:
    if tokens:
        gw.telemetry.tokens[backend.name] = gw.telemetry.tokens.get(backend.name, 0) + tokens


# -- model cards --------------------------------------------------------------------------


async def models(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.auth.check_client(request)
    cards = [await model_card(request.app, m) for m in sorted(ctx.models)]
    return web.json_response({"object": "list", "data": cards})


async def model(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.auth.check_client(request)
    name = request.match_info["model"]
    if name not in ctx.models:
        raise ApiError(
            404,
            f"The model `{name}` does not exist.",
            code=404,
            param="model",
            type_="NotFoundError",
        )
    return web.json_response(await model_card(request.app, name))


async def model_card(app: web.Application, name: str) -> dict[str, Any]:
    """The engine's card for ``name`` (cached), or a minimal one when no engine gives it."""
    gw, ctx = app[GATEWAY], app[CONTEXT]
    now = gw.clock()
    cached = ctx.model_cards.get(name)
    if cached is not None and now - cached[0] < CARD_TTL_S:
        return cached[1]
    healthy = [b for b in candidates(gw, name) if b.breaker.available(now)]
    for backend in healthy:  # an unreachable engine would hold the listing up
        card = await _fetch_card(backend, name)
        if card is not None:
            ctx.model_cards[name] = (now, card)
            return card
    if cached is not None:  # stale beats minimal
        return cached[1]
    return {"id": name, "object": "model", "created": ctx.started, "owned_by": "ascendra-proxy"}


async def _fetch_card(backend: BackendRuntime, name: str) -> dict[str, Any] | None:
    try:
        async with backend.session.get(
            backend.url + "/v1/models",
            headers=backend.headers,
            timeout=aiohttp.ClientTimeout(total=CARD_TIMEOUT_S),
            allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                return None
            listing = orjson.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        return None
    data = listing.get("data") if isinstance(listing, dict) else None
    for card in data if isinstance(data, list) else ():
        if isinstance(card, dict) and card.get("id") == name:
            return card
    return None
