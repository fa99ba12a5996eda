"""Admin API views: backends (role, health, load) and in-flight requests (progress, slack).

Theory of operation: plain read-only views over the gateway's live state, built at request
time and returned as JSON; behind the admin key (``proxy/auth.py``).  Times are seconds;
``slack_s`` is the core's slack (time left before the next token's deadline: the TTFT
deadline before the first token, the mean-TBT budget after it; negative means late).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ascendra_proxy.proxy.flight import Flight
from ascendra_proxy.proxy.gateway import Gateway
from ascendra_proxy.proxy.load import scraped_load


def backends_view(gw: Gateway) -> dict[str, Any]:
    now = gw.clock()
    rows = []
    for r in gw.backends:
        scraped = scraped_load(r, now)
        rows.append(
            {
                "name": r.name,
                "pool": r.pool.name,
                "role": role_of(gw, r.name, r.pool.role),
                "engine": r.info.engine,
                "model": r.info.model,
                "url": r.url,
                "healthy": r.breaker.available(now),
                "breaker": r.breaker.state(now).value,
                "consecutive_failures": r.breaker.failures,
                "inflight": r.inflight,
                "queued_prompt_tokens": r.queued_prompt_tokens,
                "scraped": None
                if scraped is None
                else {
                    "running": scraped.running,
                    "waiting": scraped.waiting,
                    "kv_usage": scraped.kv_usage,
                    "age_s": round(scraped.age_s, 3),
                },
            }
        )
    return {"object": "list", "data": rows}


def role_of(gw: Gateway, backend: str, configured: str) -> str:
    """The role the policy gave the backend (``adaptive`` roles), else the configured one."""
    if backend not in gw.roles:
        return configured
    role, draining = gw.roles[backend]
    return f"{role.value} (draining)" if draining else role.value


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def request_row(f: Flight, now: float) -> dict[str, Any]:
    s = f.state
    return {
        "id": s.id,
        "model": s.model,
        "backend": s.backend,
        "phase": s.phase.value,
        "stream": f.gen.stream,
        "age_s": _round(now - s.arrival),
        "prompt_tokens": s.prompt_tokens,
        "tokens": s.tokens,
        "max_tokens": s.max_tokens,
        "progress": _round(s.tokens / s.max_tokens if s.max_tokens else None),
        "ttft_s": _round(s.ttft),
        "mean_tbt_s": _round(s.mean_tbt),
        "max_gap_s": _round(s.max_gap),
        "slack_s": _round(s.slack(now)),
        "slo": {"ttft_ms": s.slo.ttft_s * 1000, "tpot_ms": s.slo.tbt_s * 1000},
        "attempts": s.attempts,
        "moved": f.moved,  # the first move's reason (offload, migration, failover), or None
    }


def requests_view(gw: Gateway) -> dict[str, Any]:
    now = gw.clock()
    rows = [request_row(f, now) for f in list(gw.flights.values())]
    rows.sort(key=lambda r: r["slack_s"] if r["slack_s"] is not None else 0.0)
    return {"object": "list", "data": rows, "held": gw.held}


def json_response(data: dict[str, Any]) -> web.Response:
    return web.json_response(data)
