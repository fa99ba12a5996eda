"""SLO attainment on /metrics: ``ascendra_slo_requests_total{model,slo_class,ttft,tbt}``.

Scripted backends make requests meet or miss their objectives on purpose, with margins wide
enough for a loaded machine: a "slow" first token or gap is 2-3x its SLO, a fast one is local.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_backend import FakeBackend, Script
from prometheus_client.parser import text_string_to_metric_families
from proxy_rig import MODEL, Rig, RigFactory, wait_until
from sse_client import read_events

from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.proxy.telemetry import Telemetry, slo_verdict

STREAM = {"model": MODEL, "prompt": "x", "stream": True}
# default: TTFT 1 s, mean TBT 100 ms; class gold is stricter on TTFT, bronze on nothing
SLO_CONFIG = {
    "default": {"ttft_ms": 1000, "tpot_ms": 100},
    "classes": {
        "gold": {"ttft_ms": 100, "tpot_ms": 100},
        "bronze": {"ttft_ms": 1000, "tpot_ms": 100},
    },
}
Key = tuple[str, str, str, str]


def script(**kw: Any) -> dict[str, Any]:
    return {"fake_script": Script(**kw).__dict__}


async def slo_counts(r: Rig) -> dict[Key, float]:
    """Every sample of ascendra_slo_requests_total, zeros included, as scraped."""
    text = await (await r.session.get(r.url + "/metrics")).text()
    out: dict[Key, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "ascendra_slo_requests":
            for s in fam.samples:
                if s.name == "ascendra_slo_requests_total":
                    lab = s.labels
                    out[(lab["model"], lab["slo_class"], lab["ttft"], lab["tbt"])] = s.value
    return out


def nonzero(counts: dict[Key, float]) -> dict[Key, float]:
    return {k: v for k, v in counts.items() if v}


async def call(r: Rig, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    resp = await r.post("/v1/completions", body, headers=headers or {})
    if body.get("stream") and resp.status == 200:
        await read_events(resp)
    else:
        await resp.read()
    return resp.status


async def test_each_request_counted_once_with_its_verdict(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], slo=SLO_CONFIG) as r:
        statuses = await asyncio.gather(
            call(r, {**STREAM, **script(tokens=4)}),  # both met
            call(r, {**STREAM, **script(tokens=4, first_delay_s=2.0)}),  # slow first token
            call(r, {**STREAM, **script(tokens=4, gap_s=0.3)}, {"x-slo-class": "bronze"}),
            call(r, {**STREAM, **script(status=500)}),  # fails before the first token
            call(r, {**STREAM, **script(tokens=1, gap_s=0.5)}, {"x-slo-class": "bronze"}),
            call(r, {**STREAM, "stream": False, **script(tokens=3)}),  # unary: TTFT = answer
        )
        assert statuses == [200, 200, 200, 502, 200, 200]
        await wait_until(lambda: not r.gateway.flights)
        counts = await slo_counts(r)
    assert nonzero(counts) == {
        (MODEL, "", "met", "met"): 2,
        (MODEL, "", "missed", "met"): 1,
        (MODEL, "bronze", "met", "missed"): 1,
        (MODEL, "", "missed", "missed"): 1,
        (MODEL, "bronze", "met", "met"): 1,  # one token: mean TBT is met by definition
    }
    # the whole bounded label set exists from the start: 1 model x ("", bronze, gold) x 4
    assert len(counts) == 12


async def test_ttft_header_and_class_change_the_verdict(make_rig: RigFactory) -> None:
    slow = {**STREAM, **script(tokens=2, first_delay_s=0.3)}  # TTFT about 0.3 s
    tight_ok = {"default_slo_access": {"min_ttft_ms": 1}}
    async with make_rig([FakeBackend("a")], slo=SLO_CONFIG, auth=tight_ok) as r:
        await asyncio.gather(
            call(r, slow),  # default 1 s: met
            call(r, slow, {"x-slo-ttft-ms": "100"}),  # the header's 100 ms: missed
            call(r, slow, {"x-slo-class": "gold"}),  # gold's 100 ms: missed
            call(r, slow, {"x-slo-class": "gold", "x-slo-ttft-ms": "2000"}),  # header wins
        )
        await wait_until(lambda: not r.gateway.flights)
        counts = nonzero(await slo_counts(r))
    assert counts == {
        (MODEL, "", "met", "met"): 1,
        (MODEL, "", "missed", "met"): 1,
        (MODEL, "gold", "missed", "met"): 1,
        (MODEL, "gold", "met", "met"): 1,
    }


async def test_client_disconnect_mid_stream_is_a_miss(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=1000, gap_s=0.01))
    async with make_rig([fake], slo=SLO_CONFIG) as r:
        resp = await r.post("/v1/completions", STREAM)
        await resp.content.readline()  # the first token came well within its TTFT SLO
        resp.close()
        await wait_until(lambda: not r.gateway.flights)
        assert r.gateway.telemetry.requests == {(MODEL, "client_disconnected"): 1}
        assert nonzero(await slo_counts(r)) == {(MODEL, "", "missed", "missed"): 1}


async def test_unknown_class_is_rejected_and_adds_no_series(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], slo=SLO_CONFIG) as r:
        before = await slo_counts(r)
        status = await call(r, STREAM, {"x-slo-class": "platinum"})
        after = await slo_counts(r)
    assert status == 400
    assert before == after and set(after) == {
        (MODEL, c, t, b)
        for c in ("", "bronze", "gold")
        for t in ("met", "missed")
        for b in ("met", "missed")
    }


def ended(
    arrivals: list[tuple[float, int]], outcome: Outcome, slo_class: str | None = None
) -> RequestState:
    req = RequestState("r", MODEL, 3, 10, SLO(1.0, 0.1), arrival=0.0, slo_class=slo_class)
    req.on_dispatch(0.0, "a")
    for now, n in arrivals:
        req.on_tokens(now, n)
    req.finish(5.0, outcome)
    return req


@pytest.mark.parametrize(
    ("arrivals", "outcome", "verdict"),
    [
        pytest.param([(0.5, 1), (0.6, 1)], Outcome.COMPLETED, (True, True), id="both"),
        pytest.param([(1.5, 1), (1.55, 1)], Outcome.COMPLETED, (False, True), id="late-first"),
        # mean TBT, not the worst gap: a 0.15 s gap among three makes a 0.083 s mean
        pytest.param(
            [(0.5, 1), (0.55, 1), (0.6, 1), (0.75, 1)], Outcome.COMPLETED, (True, True), id="mean"
        ),
        pytest.param([(0.5, 1), (0.9, 2)], Outcome.COMPLETED, (True, False), id="slow-mean"),
        pytest.param([(0.5, 1)], Outcome.COMPLETED, (True, True), id="one-token"),
        pytest.param([], Outcome.COMPLETED, (False, True), id="no-token"),
        pytest.param([(0.5, 1), (0.6, 1)], Outcome.BACKEND_FAILED, (False, False), id="failed"),
        pytest.param([(0.5, 1)], Outcome.CLIENT_DISCONNECTED, (False, False), id="disconnected"),
        pytest.param([], Outcome.REJECTED, (False, False), id="rejected"),
    ],
)
def test_slo_verdict(
    arrivals: list[tuple[float, int]], outcome: Outcome, verdict: tuple[bool, bool]
) -> None:
    assert slo_verdict(ended(arrivals, outcome)) == verdict


def test_telemetry_labels_stay_within_the_config() -> None:
    tel = Telemetry(["a"], models=[MODEL], slo_classes=["gold"])
    assert len(tel.slo) == 8
    tel.slo_done(ended([(0.5, 1)], Outcome.COMPLETED, slo_class="gold"))
    tel.slo_done(ended([(0.5, 1)], Outcome.COMPLETED, slo_class="nope"))  # not configured
    tel.slo_done(ended([(0.5, 1)], Outcome.COMPLETED))
    assert {k: v for k, v in tel.slo.items() if v} == {
        (MODEL, "gold", "met", "met"): 1,
        (MODEL, "", "met", "met"): 2,
    }
    assert len(tel.slo) == 8
