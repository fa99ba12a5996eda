"""Typed application keys and the static per-app context shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.slo import SLOTable
from ascendra_proxy.proxy.auth import Auth
from ascendra_proxy.proxy.gateway import Gateway


@dataclass(frozen=True, slots=True)
class ProxyContext:
    cfg: ProxyConfig
    auth: Auth
    models: frozenset[str]
    slo_table: SLOTable
    max_body_bytes: int
    started: int  # unix time the app was built (``created`` of /v1/models entries)
    # engines' model cards by model: (when fetched, card), see ``proxy/passthrough.py``
    model_cards: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)


CONTEXT = web.AppKey("ascendra_context", ProxyContext)
GATEWAY = web.AppKey("ascendra_gateway", Gateway)
