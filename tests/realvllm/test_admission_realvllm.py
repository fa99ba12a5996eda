"""Admission control in front of real vLLM: a class that opted in to refusal gets a 429 with
``Retry-After`` when the engines are saturated and its TTFT cannot be met; none is refused
while an engine is idle.

Two real vLLM engines (LP = ``real_vllm``, HP = ``real_vllm_second``, 4 sequences each)
behind ``ascendra``.  The class ``instant`` has a 1 ms TTFT objective, which no engine can
meet, and ``on_late: refuse``.  With both engines idle such a request is served (the rule
never refuses while an engine idles).  With LP's four sequence slots taken by long streams
and HP running one (its ticket refused), it waits in the proxy, is late on every engine,
and is answered 429 ``deadline_unreachable`` with a ``Retry-After`` at once: it never
reaches an engine, and the proxy counts it as ``shed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from proxy_helpers import CLIENT_KEY, Proxy, backend, proxy_config, read_stream, running_proxy
from test_proxy_realvllm import LONG, RUNNING, create, start_warm, until_watched
from vllm_harness import VllmLauncher, VllmOptions, VllmServer, metric, scrape, wait_metric

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(900)]

MODEL = "tiny"
SLO = {
    "default": {"ttft_ms": 600_000, "tpot_ms": 60_000},
    "classes": {"instant": {"ttft_ms": 1, "tpot_ms": 60_000, "on_late": "refuse"}},
}


@pytest.fixture(scope="module")
def pair(vllm_launcher: VllmLauncher) -> Iterator[tuple[VllmServer, VllmServer]]:
    """``real_vllm`` and ``real_vllm_second`` (same labels and options), warmed; the second
    starts in the background while the first warms."""
    with ThreadPoolExecutor(1) as pool:
        hp: Future[VllmServer] = pool.submit(start_warm, vllm_launcher, "b", VllmOptions(cpus="1"))
        lp = start_warm(vllm_launcher, "a", VllmOptions())
        yield lp, hp.result()


@pytest.fixture
async def ascendra(pair: tuple[VllmServer, VllmServer]) -> AsyncIterator[Proxy]:
    lp, hp = pair
    pools = [
        {"name": "lp", "role": "lp", "backends": [backend(lp, "lp-a")]},
        {"name": "hp", "role": "hp", "backends": [backend(hp, "hp-b")]},
    ]
    policy = {"type": "ascendra", "ticket": {"running_frac": 0.25}}  # HP: one at a time
    async with running_proxy(proxy_config(pools, policy, slo=SLO)) as proxy:
        await until_watched(proxy)
        yield proxy


async def instant(proxy: Proxy) -> httpx.Response:
    """One short request of the refusing class (plain HTTP: the SDK would retry a 429)."""
    body = {"model": MODEL, "prompt": "admission", "max_tokens": 4, "temperature": 0}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "x-slo-class": "instant"}
    return await proxy.http.post(proxy.url + "/v1/completions", json=body, headers=headers)


async def shed_count(proxy: Proxy) -> float:
    return metric(await scrape(proxy.http, proxy.url), "ascendra_requests_total", outcome="shed")


async def test_refused_only_when_saturated_and_late_everywhere(
    ascendra: Proxy, pair: tuple[VllmServer, VllmServer]
) -> None:
    http = ascendra.http
    for server in pair:
        await wait_metric(http, server.base_url, RUNNING, lambda v: v == 0)
    idle = await instant(ascendra)  # both engines idle: served, however late
    assert idle.status_code == 200, idle.text
    assert idle.json()["usage"]["completion_tokens"] == 4

    streams = []
    try:
        for _ in range(5):  # the first takes HP's ticket, the next four LP's slots
            s = await create(ascendra.client, False, LONG, stream=True)
            await read_stream(s, stop_after_chunks=1)
            streams.append(s)
        await wait_metric(http, pair[1].base_url, RUNNING, lambda v: v == 1)
        await wait_metric(http, pair[0].base_url, RUNNING, lambda v: v == 4)
        before = [metric(await scrape(http, s.base_url), "vllm:num_requests_waiting") for s in pair]
        refused = await instant(ascendra)
        assert refused.status_code == 429, refused.text
        err = refused.json()["error"]
        assert err["code"] == "deadline_unreachable" and err["type"] == "rate_limit_error"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        after = [metric(await scrape(http, s.base_url), "vllm:num_requests_waiting") for s in pair]
        assert after == before  # it never reached an engine
    finally:
        for s in streams:
            await s.close()
    assert await shed_count(ascendra) == 1

    for server in pair:
        await wait_metric(http, server.base_url, RUNNING, lambda v: v == 0)
    again = await instant(ascendra)  # idle again: served
    assert again.status_code == 200, again.text
    assert await shed_count(ascendra) == 1
