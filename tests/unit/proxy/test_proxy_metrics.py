"""The families a Prometheus user expects: durations, TTFT of non-streaming answers, model
labels, build info, process metrics, refusals before admission, and client errors that are
not SLO misses."""

from __future__ import annotations

import asyncio
from typing import Any

from fake_backend import FakeBackend, Script
from prometheus_client.parser import text_string_to_metric_families
from proxy_rig import MODEL, Rig, RigFactory, wait_until
from sse_client import read_events

from ascendra_proxy import __version__

STREAM = {"model": MODEL, "prompt": "x", "stream": True}
SLO_CONFIG = {
    "default": {"ttft_ms": 1000, "tpot_ms": 100},
    "classes": {"gold": {"ttft_ms": 50, "tpot_ms": 50}},
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(r: Rig) -> Samples:
    text = await (await r.session.get(r.url + "/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def script(**kw: Any) -> dict[str, Any]:
    return {"fake_script": Script(**kw).__dict__}


async def test_latency_histograms_carry_model_and_stream_labels(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        await read_events(await r.post("/v1/completions", STREAM))
        unary = await r.post("/v1/completions", {**STREAM, "stream": False})
        assert unary.status == 200
        await unary.read()
        await wait_until(lambda: not r.gateway.flights)
        m = await scrape(r)
    ttft = "ascendra_time_to_first_token_seconds_count"
    assert sample(m, ttft, backend="a", model=MODEL, stream="true") == 1
    assert sample(m, ttft, backend="a", model=MODEL, stream="false") == 1  # its whole latency
    assert sample(m, "ascendra_inter_token_gap_seconds_count", backend="a", model=MODEL) == 4
    duration = "ascendra_request_duration_seconds_count"
    assert sample(m, duration, model=MODEL, outcome="completed") == 2


async def test_build_info_and_process_metrics(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        m = await scrape(r)
    assert sample(m, "ascendra_build_info", version=__version__) == 1
    assert sample(m, "process_resident_memory_bytes") > 0
    assert sample(m, "process_start_time_seconds") > 0


async def test_refusals_before_admission_are_counted_by_reason(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], slo=SLO_CONFIG, auth={"api_keys": ["k"]}) as r:
        key = {"Authorization": "Bearer k"}
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        cases = [
            (r.post("/v1/completions", STREAM), 401),
            (r.post("/v1/completions", {**STREAM, "model": "other"}, headers=key), 404),
            (r.post("/v1/chat/completions", {**chat, "messages": []}, headers=key), 400),
            (r.post("/v1/completions", {**STREAM, "n": 0}, headers=key), 400),
            (r.post("/v1/completions", STREAM, headers={**key, "x-slo-class": "tin"}), 400),
            (r.post("/v1/completions", STREAM, headers={**key, "x-slo-ttft-ms": "x"}), 400),
            (
                r.session.post(r.url + "/v1/completions", data=b"{not json", headers=key),
                400,
            ),
        ]
        for call, status in cases:
            resp = await call
            assert resp.status == status, await resp.text()
        m = await scrape(r)
        assert not r.fakes[0].bodies  # nothing reached the backend
    refused = {
        dict(labels)["reason"]: v
        for (name, labels), v in m.items()
        if name == "ascendra_refused_requests_total"
    }
    assert refused == {
        "unauthorized": 1,
        "body_too_large": 0,
        "invalid_json": 1,
        "model_not_found": 1,
        "invalid_request": 2,
        "unknown_slo_class": 1,
        "invalid_slo": 1,
        "slo_not_allowed": 0,
        "invalid_body": 0,
        "body_timeout": 0,
    }
    assert not any(name == "ascendra_requests_total" for name, _ in m)  # none admitted


async def test_an_engines_4xx_is_a_client_error_not_an_slo_miss(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], slo=SLO_CONFIG) as r:
        statuses = []
        for body in (
            {**STREAM, **script(status=400)},  # the engine refuses the request itself
            {**STREAM, **script(tokens=2, error_after=1, error_code=400)},  # refused mid-stream
            {**STREAM, **script(status=500)},  # the engine's own failure is a miss
        ):
            resp = await r.post("/v1/completions", body)
            statuses.append(resp.status)
            await resp.read()
        await wait_until(lambda: not r.gateway.flights)
        await asyncio.sleep(0)
        m = await scrape(r)
    assert statuses == [400, 200, 502]
    assert sample(m, "ascendra_requests_total", model=MODEL, outcome="client_error") == 2
    assert sample(m, "ascendra_requests_total", model=MODEL, outcome="backend_failed") == 1
    slo = {labels: v for (name, labels), v in m.items() if name == "ascendra_slo_requests_total"}
    assert sum(slo.values()) == 1  # only the engine failure is judged (a miss)
