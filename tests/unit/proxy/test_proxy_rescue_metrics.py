"""Rescue economics on /metrics: moved requests by first move and verdict, recomputed prompts.

``ascendra_moved_requests_total{model,reason,ttft,tbt}`` counts a request once, at its end,
when it was moved at least once; ``ascendra_recomputed_prompt_tokens_total{backend}`` and
``ascendra_cached_prompt_tokens_total{backend}`` count, once per move, the prompt the move's
target was sent and what its engine reported cached.  Scripted backends, explicit moves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_backend import FakeBackend, Script
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from proxy_rig import MODEL, Rig, RigFactory, wait_until
from sse_client import read_events

from ascendra_proxy.backends.chunks import cached_prompt_tokens
from ascendra_proxy.core.decisions import Dispatch, Move, Reject
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.proxy.admin import request_row
from ascendra_proxy.proxy.telemetry import Telemetry
from ascendra_proxy.proxy.ticker import apply_action

STREAM = {"model": MODEL, "prompt": [5, 6, 7, 8], "stream": True}
SLO_CONFIG = {"default": {"ttft_ms": 2000, "tpot_ms": 1000}}  # met unless the request fails


def _state(outcome: Outcome, ttft_s: float, tokens: int = 3, gap_s: float = 0.01) -> RequestState:
    s = RequestState("r", MODEL, 10, 100, SLO(ttft_s=1.0, tbt_s=0.1), arrival=0.0)
    s.on_dispatch(0.0, "lp")
    for i in range(tokens):
        s.on_tokens(ttft_s + i * gap_s, 1)
    s.finish(ttft_s + tokens * gap_s, outcome)
    return s


def _samples(text: str, family: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for s in fam.samples:
                if s.name == family + "_total":
                    lab = s.labels
                    names = ("model", "reason", "ttft", "tbt") if "reason" in lab else ("backend",)
                    out[tuple(lab[k] for k in names)] = s.value
    return out


# -- telemetry counting ---------------------------------------------------------------------


def test_moved_requests_are_counted_by_first_reason_and_verdict() -> None:
    tel = Telemetry(["lp", "hp"], models=[MODEL])
    tel.moved_done(_state(Outcome.COMPLETED, 0.2), "offload_ttft")  # rescued
    tel.moved_done(_state(Outcome.COMPLETED, 0.2), "offload_ttft")
    tel.moved_done(_state(Outcome.COMPLETED, 1.5), "offload_ttft")  # TTFT lost anyway
    tel.moved_done(_state(Outcome.COMPLETED, 0.2, gap_s=0.5), "migrate_tbt")  # TBT lost
    tel.moved_done(_state(Outcome.BACKEND_FAILED, 0.2), "failover")  # only completed can meet
    assert tel.moved == {
        (MODEL, "offload_ttft", "met", "met"): 2,
        (MODEL, "offload_ttft", "missed", "met"): 1,
        (MODEL, "migrate_tbt", "met", "missed"): 1,
        (MODEL, "failover", "missed", "missed"): 1,
    }
    text = generate_latest(tel.registry).decode()
    assert _samples(text, "ascendra_moved_requests") == {
        (MODEL, "failover", "missed", "missed"): 1.0,
        (MODEL, "migrate_tbt", "met", "missed"): 1.0,
        (MODEL, "offload_ttft", "met", "met"): 2.0,
        (MODEL, "offload_ttft", "missed", "met"): 1.0,
    }


def test_resubmissions_sum_prompt_and_reported_cached_tokens_per_backend() -> None:
    tel = Telemetry(["lp", "hp"], models=[MODEL])
    tel.resubmission("hp", 120, 64)
    tel.resubmission("hp", 30, None)  # the engine did not report cached tokens
    tel.resubmission("lp", 7, 0)
    text = generate_latest(tel.registry).decode()
    assert _samples(text, "ascendra_recomputed_prompt_tokens") == {("hp",): 150.0, ("lp",): 7.0}
    assert _samples(text, "ascendra_cached_prompt_tokens") == {("hp",): 64.0, ("lp",): 0.0}
    assert _samples(text, "ascendra_moved_requests") == {}


@pytest.mark.parametrize(
    ("usage", "cached"),
    [
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 8}}, 8),
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}}, 0),
        ({"prompt_tokens": 9, "prompt_tokens_details": None}, None),  # vLLM without the flag
        ({"prompt_tokens": 9}, None),
        ({"prompt_tokens_details": {"cached_tokens": "8"}}, None),
        (None, None),
    ],
)
def test_cached_prompt_tokens_reads_the_usage_details(usage: Any, cached: int | None) -> None:
    assert cached_prompt_tokens(usage) == cached


# -- through the proxy ------------------------------------------------------------------------


def _route(*order: str) -> Any:
    def route(state: Any, snaps: Any, now: float, exclude: frozenset[str]) -> Dispatch | Reject:
        for name in order:
            if name not in exclude:
                return Dispatch(name, "test")
        return Reject(503, "no_backend", "none left", "test")

    return route


async def _scrape(r: Rig) -> str:
    return await (await r.session.get(r.url + "/metrics")).text()


async def test_an_offload_counts_the_target_prompt_and_its_cached_part(
    make_rig: RigFactory,
) -> None:
    lp = FakeBackend("lp", script=Script(first_delay_s=30))
    hp = FakeBackend("hp", script=Script(cached_tokens=2))
    async with make_rig([lp, hp], slo=SLO_CONFIG) as r:
        gw = r.gateway
        gw.policy.route = _route("lp")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: lp.running == 1)
        (flight,) = gw.flights.values()
        assert apply_action(gw, Move(flight.state.id, Dispatch("hp", "offload_ttft"), "offload"))
        assert request_row(flight, gw.clock())["moved"] == "offload_ttft"  # admin view
        events, done = await read_events(await task)
        assert done and len(events) == 5
        await wait_until(lambda: not gw.flights)
        text = await _scrape(r)
    assert _samples(text, "ascendra_moved_requests") == {(MODEL, "offload_ttft", "met", "met"): 1}
    assert _samples(text, "ascendra_recomputed_prompt_tokens") == {("hp",): 4.0, ("lp",): 0.0}
    assert _samples(text, "ascendra_cached_prompt_tokens") == {("hp",): 2.0, ("lp",): 0.0}


async def test_an_offloaded_unary_request_counts_the_answers_usage(make_rig: RigFactory) -> None:
    lp = FakeBackend("lp", script=Script(first_delay_s=30))
    hp = FakeBackend("hp", script=Script(cached_tokens=1))
    async with make_rig([lp, hp], slo=SLO_CONFIG) as r:
        gw = r.gateway
        gw.policy.route = _route("lp")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", {**STREAM, "stream": False}))
        await wait_until(lambda: lp.running == 1)
        (flight,) = gw.flights.values()
        assert apply_action(gw, Move(flight.state.id, Dispatch("hp", "offload_ttft"), "offload"))
        resp = await task
        assert resp.status == 200
        await wait_until(lambda: not gw.flights)
        tel = gw.telemetry
    assert tel.moved == {(MODEL, "offload_ttft", "met", "met"): 1}
    assert tel.recomputed == {"lp": 0, "hp": 3}  # the engine's own prompt count (the fake's)
    assert tel.cached == {"lp": 0, "hp": 1}


async def test_a_migration_counts_the_continuation_prompt_sent(make_rig: RigFactory) -> None:
    a = FakeBackend("a", script=Script(tokens=50, gap_s=0.02))
    b = FakeBackend("b", script=Script(tokens=3))  # reports no cached tokens
    async with make_rig([a, b], slo=SLO_CONFIG) as r:
        gw = r.gateway
        gw.policy.route = _route("a", "b")  # type: ignore[method-assign]
        resp = await r.post("/v1/completions", {**STREAM, "max_tokens": 20})
        await resp.content.readline()
        (flight,) = gw.flights.values()
        await wait_until(lambda: flight.state.tokens >= 2)
        assert apply_action(gw, Move(flight.state.id, Dispatch("b", "migrate_tbt"), "migrate"))
        _, done = await read_events(resp)
        assert done
        await wait_until(lambda: not gw.flights)
        (cont,) = b.bodies
        tel = gw.telemetry
    assert len(cont["prompt"]) >= 5  # the fake's prompt ids [1, 2, 3] and the tokens kept
    assert tel.recomputed == {"a": 0, "b": len(cont["prompt"])}
    assert tel.cached == {"a": 0, "b": 0}
    assert tel.moved == {(MODEL, "migrate_tbt", "met", "met"): 1}


async def test_a_failover_continuation_is_a_move_and_a_retry_is_not(make_rig: RigFactory) -> None:
    a = FakeBackend("a", script=Script(tokens=6, die_after=3))
    b = FakeBackend("b", script=Script(tokens=2, cached_tokens=5))
    async with make_rig([a, b], slo=SLO_CONFIG) as r:
        gw = r.gateway
        gw.policy.route = _route("a", "b")  # type: ignore[method-assign]
        _, done = await read_events(await r.post("/v1/completions", {**STREAM, "max_tokens": 5}))
        assert done
        (cont,) = b.bodies
        assert cont["prompt"] == [1, 2, 3, 100, 101, 102]
        a.script = Script(status=500)  # fails before the first token: retried on b
        _, done = await read_events(await r.post("/v1/completions", STREAM))
        assert done and a.started == 2 and b.started == 2
        await wait_until(lambda: not gw.flights)
        tel = gw.telemetry
    assert tel.moved == {(MODEL, "failover", "met", "met"): 1}
    assert tel.recomputed == {"a": 0, "b": 6}
    assert tel.cached == {"a": 0, "b": 5}
    assert tel.retries == {"a": 1, "b": 0}


async def test_a_move_whose_target_fails_is_lost_after_rescue(make_rig: RigFactory) -> None:
    a = FakeBackend("a", script=Script(tokens=50, gap_s=0.02))
    b = FakeBackend("b", script=Script(status=500))
    async with make_rig([a, b], slo=SLO_CONFIG) as r:
        gw = r.gateway
        gw.policy.route = _route("a")  # type: ignore[method-assign]
        resp = await r.post("/v1/completions", {**STREAM, "max_tokens": 20})
        await resp.content.readline()
        (flight,) = gw.flights.values()
        await wait_until(lambda: flight.state.tokens >= 2)
        gw.policy.route = _route()  # type: ignore[method-assign]  # none takes it after b fails
        assert apply_action(gw, Move(flight.state.id, Dispatch("b", "migrate_tbt"), "migrate"))
        events, done = await read_events(resp)
        assert done and "error" in events[-1]
        await wait_until(lambda: not gw.flights)
        tel = gw.telemetry
    assert tel.moved == {(MODEL, "migrate_tbt", "missed", "missed"): 1}
    assert tel.requests == {(MODEL, "backend_failed"): 1}
