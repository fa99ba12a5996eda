"""HTTP handlers: thin.  Parse and validate, resolve the SLO, hand over to the gateway.

Theory of operation: no handler decides anything about routing or retries: generation
handlers check the client key, read the body within the size limit and the body-read
timeout, validate it (``proxy/validate.py``), resolve the request's SLO from config and
headers (core ``resolve_slo``: ``x-slo-ttft-ms``/``x-slo-tpot-ms`` > ``x-slo-class`` > model >
default) within what the key may ask for (core ``check_slo_access``), admit it, and return
whatever ``stream.serve`` returns.  Errors are raised as ``ApiError`` and rendered once by
``proxy/errors.py``; a request refused before admission is counted once in
``refused_requests_total`` by the reason ``refusal_reason`` gives.  The relayed endpoints
and model cards are in ``proxy/passthrough.py``.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.core.slo import (
    CLASS_HEADER,
    SLO,
    SLOAccess,
    SLOAccessError,
    SLOError,
    SLOTable,
    check_slo_access,
    parse_slo_header_ms,
    resolve_slo,
)
from ascendra_proxy.proxy import admin
from ascendra_proxy.proxy.auth import DEFAULT_ACCESS
from ascendra_proxy.proxy.connections import read_body
from ascendra_proxy.proxy.errors import ApiError, bad_request
from ascendra_proxy.proxy.keys import CONTEXT, GATEWAY
from ascendra_proxy.proxy.stream import serve
from ascendra_proxy.proxy.validate import GenerationRequest, parse_body, validate


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, Endpoint.COMPLETIONS)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, Endpoint.CHAT)


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    try:
        gen, slo, slo_class = await _admissible(request, endpoint)
    except ApiError as exc:
        gateway.telemetry.refusal(refusal_reason(exc))
        raise
    except web.HTTPRequestEntityTooLarge:
        gateway.telemetry.refusal("body_too_large")
        raise
    flight = gateway.admit(gen, slo, slo_class)
    return await serve(gateway, request, flight)


async def _admissible(
    request: web.Request, endpoint: Endpoint
) -> tuple[GenerationRequest, SLO, str | None]:
    """The checks before admission: key, size, body, SLO; raises ``ApiError`` on refusal."""
    ctx = request.app[CONTEXT]
    access = ctx.auth.check_client(request)
    length = request.content_length
    if length is not None and length > ctx.max_body_bytes:
        raise ApiError(
            413, f"request body too large (limit {ctx.max_body_bytes} bytes)", code="body_too_large"
        )
    raw = await read_body(request, ctx.cfg.connections.body_timeout_s)
    gen = validate(endpoint, parse_body(raw), ctx.models)
    slo, slo_class = request_slo(ctx.slo_table, gen.model, request, access)
    return gen, slo, slo_class


def refusal_reason(exc: ApiError) -> str:
    """The ``refused_requests_total`` reason of an error raised before admission."""
    if exc.status == 401:
        return "unauthorized"
    if exc.status == 413:
        return "body_too_large"
    if exc.status == 404 and exc.param == "model":
        return "model_not_found"
    if exc.code == "invalid_slo":
        return "unknown_slo_class" if exc.param == CLASS_HEADER else "invalid_slo"
    if exc.code in ("invalid_json", "slo_not_allowed", "invalid_body", "body_timeout"):
        return exc.code
    return "invalid_request"


def request_slo(
    table: SLOTable, model: str, request: web.Request, access: SLOAccess = DEFAULT_ACCESS
) -> tuple[SLO, str | None]:
    headers = request.headers
    try:
        ttft = parse_slo_header_ms("x-slo-ttft-ms", headers.get("x-slo-ttft-ms"))
        tpot = parse_slo_header_ms("x-slo-tpot-ms", headers.get("x-slo-tpot-ms"))
    except SLOError as exc:
        raise bad_request(str(exc), code="invalid_slo") from None
    slo_class = headers.get("x-slo-class") or None
    try:
        slo = resolve_slo(table, model, slo_class, ttft, tpot)
    except SLOError as exc:  # the only error left: a class the config does not name
        raise bad_request(str(exc), param=CLASS_HEADER, code="invalid_slo") from None
    try:
        check_slo_access(access, table, model, slo_class, ttft, tpot)
    except SLOAccessError as exc:
        raise bad_request(str(exc), param=exc.header, code="slo_not_allowed") from None
    return slo, slo_class


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    now = gateway.clock()
    healthy = sum(1 for r in gateway.backends if r.breaker.available(now))
    body = {"ready": healthy > 0, "healthy_backends": healthy, "backends": len(gateway.backends)}
    if healthy == 0:
        return web.json_response(body, status=503, headers={"Retry-After": "1"})
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[GATEWAY].telemetry.registry
    resp = web.Response(body=generate_latest(registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def admin_backends(request: web.Request) -> web.Response:
    request.app[CONTEXT].auth.check_admin(request)
    return admin.json_response(admin.backends_view(request.app[GATEWAY]))


async def admin_requests(request: web.Request) -> web.Response:
    request.app[CONTEXT].auth.check_admin(request)
    return admin.json_response(admin.requests_view(request.app[GATEWAY]))


def unix_now() -> int:
    return int(time.time())
