"""Builders shared by the core unit tests (plain values, no fixtures needed)."""

from __future__ import annotations

from ascendra_proxy.core.backend import BackendSnapshot, Role, ScrapedLoad
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.core.slo import SLO

SLO_1S = SLO(ttft_s=1.0, tbt_s=0.1)


def request(
    rid: str = "r1",
    model: str = "m",
    arrival: float = 0.0,
    slo: SLO = SLO_1S,
    max_tokens: int = 16,
) -> RequestState:
    return RequestState(
        id=rid, model=model, prompt_tokens=10, max_tokens=max_tokens, slo=slo, arrival=arrival
    )


def snapshot(
    name: str,
    *,
    model: str = "m",
    healthy: bool = True,
    inflight: int = 0,
    scraped: ScrapedLoad | None = None,
    role: Role = Role.MIXED,
    inflight_limit: int | None = None,
) -> BackendSnapshot:
    return BackendSnapshot(
        name=name,
        pool="p",
        role=role,
        engine="vllm",
        model=model,
        healthy=healthy,
        inflight=inflight,
        queued_prompt_tokens=0,
        scraped=scraped,
        inflight_limit=inflight_limit,
    )


def scraped(
    waiting: int | None = 0,
    running: int | None = 0,
    kv: float | None = 0.0,
    age: float = 0.1,
) -> ScrapedLoad:
    return ScrapedLoad(running=running, waiting=waiting, kv_usage=kv, age_s=age)
