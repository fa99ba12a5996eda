"""SGLang flavour over HTTP: OpenAI chunk details, /generate, /abort_request, server info."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from emu_helpers import FAST, get_json, metric, oai, post, scrape, sse

from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    cfg = EmulatorConfig(flavor="sglang", time_scale=FAST, model="served")
    async with run_emulator(cfg) as running:
        yield running


async def test_completion_chunks_carry_null_fields_rid_and_client_model(
    emu: RunningEmulator,
) -> None:
    body = {
        "model": "whatever",
        "prompt": "the",
        "max_tokens": 4,
        "ignore_eos": True,
        "stream": True,
        "rid": "r-1",
        "stream_options": {"include_usage": True},
    }
    events = await sse(emu.url + "/v1/completions", body)
    chunks, usage, done = events[:-2], events[-2], events[-1]
    assert done == "[DONE]" and len(chunks) == 4
    for c in chunks:
        assert c["id"] == "r-1" and c["model"] == "whatever" and c["usage"] is None
        assert set(c["choices"][0]) == {
            "index",
            "text",
            "logprobs",
            "finish_reason",
            "matched_stop",
        }
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"][0]["matched_stop"] is None
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert "prompt_tokens_details" in usage["usage"]


async def test_chat_stream_ends_with_a_separate_finish_chunk(emu: RunningEmulator) -> None:
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "ignore_eos": True,
        "stream": True,
    }
    events = await sse(emu.url + "/v1/chat/completions", body)
    role, contents, finish = events[0], events[1:4], events[4]
    assert events[-1] == "[DONE]" and len(events) == 6
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"][0]["delta"]["role"] is None for c in contents)
    assert all(c["choices"][0]["finish_reason"] is None for c in contents)
    assert finish["choices"][0]["delta"]["content"] is None
    assert finish["choices"][0]["finish_reason"] == "length"


async def test_eos_is_reported_as_matched_stop() -> None:
    cfg = EmulatorConfig(flavor="sglang", time_scale=0.0, eos_rate=0.5)
    async with run_emulator(cfg) as emu:
        status, body = await post(emu.url + "/v1/completions", {"prompt": "the", "max_tokens": 50})
        assert status == 200
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert choice["matched_stop"] == emu.ctx.tokenizer.eos_token_id


async def test_openai_sdk_against_sglang(emu: RunningEmulator) -> None:
    resp = await oai(emu).completions.create(
        model="anything", prompt="the world", max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert resp.model == "anything" and resp.usage is not None
    assert resp.usage.completion_tokens == 5


async def test_generate_streams_cumulative_text_and_ids(emu: RunningEmulator) -> None:
    body = {
        "input_ids": [5, 300, 301],
        "sampling_params": {"max_new_tokens": 6, "ignore_eos": True},
        "stream": True,
        "rid": "g1",
    }
    events = await sse(emu.url + "/generate", body)
    assert events[-1] == "[DONE]" and len(events) == 7
    chunks = events[:-1]
    for i, c in enumerate(chunks, start=1):
        assert len(c["output_ids"]) == i
        assert c["meta_info"]["id"] == "g1" and c["meta_info"]["prompt_tokens"] == 3
        assert c["meta_info"]["completion_tokens"] == i
        if i > 1:
            assert c["text"].startswith(chunks[i - 2]["text"])
            assert c["output_ids"][:-1] == chunks[i - 2]["output_ids"]
    assert chunks[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 6}
    status, full = await post(emu.url + "/generate", {**body, "stream": False, "rid": "g2"})
    assert status == 200 and full["output_ids"] == chunks[-1]["output_ids"]
    assert full["text"] == chunks[-1]["text"]


async def test_generate_with_text_and_validation(emu: RunningEmulator) -> None:
    status, body = await post(
        emu.url + "/generate", {"text": "the", "sampling_params": {"max_new_tokens": 2}}
    )
    assert status == 200 and body["meta_info"]["prompt_tokens"] == 2
    status, body = await post(emu.url + "/generate", {"sampling_params": {}})
    assert status == 400 and set(body) == {"error"} and body["error"]["message"]
    status, body = await post(emu.url + "/v1/completions", {"max_tokens": 2})
    assert status == 400 and body["object"] == "error" and body["code"] == 400


async def test_abort_request_by_rid_finishes_with_abort(emu: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        body = {
            "prompt": "the",
            "max_tokens": 5000,
            "ignore_eos": True,
            "stream": True,
            "rid": "victim",
        }
        resp = await session.post(emu.url + "/v1/completions", json=body)
        assert (await resp.content.readline()).startswith(b"data: ")
        status, _ = await post(emu.url + "/abort_request", {"rid": "victim"})
        assert status == 200
        rest = (await asyncio.wait_for(resp.read(), 30.0)).decode()  # finish_reason proves it
    assert '"finish_reason":"abort"' in rest and rest.endswith("data: [DONE]\n\n")
    assert emu.engine.num_running == 0
    assert metric(await scrape(emu), "sglang:num_aborted_requests_total") == 1


async def test_server_info_and_metrics(emu: RunningEmulator) -> None:
    status, info = await get_json(emu.url + "/get_server_info")
    assert status == 200 and info["max_total_num_tokens"] == 432000
    status, same = await get_json(emu.url + "/server_info")
    assert same["max_total_num_tokens"] == 432000
    status, model = await get_json(emu.url + "/get_model_info")
    assert model["model_path"] == "served"
    await post(
        emu.url + "/generate",
        {"text": "the", "sampling_params": {"max_new_tokens": 3, "ignore_eos": True}},
    )
    text = await scrape(emu)
    labels = {"model_name": "served", "tp_rank": "0"}
    for name in (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:cache_hit_rate",
        "sglang:num_used_tokens",
    ):
        assert metric(text, name, **labels) == 0
    assert metric(text, "sglang:max_total_num_tokens", **labels) == 432000
    assert metric(text, "sglang:generation_tokens_total", **labels) == 3
    assert metric(text, "sglang:time_to_first_token_seconds_count", **labels) == 1
