"""vLLM flavour over HTTP: stream shapes, usage, token ids, continuation, stop rules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from emu_helpers import FAST, oai, post, sse

from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with run_emulator(EmulatorConfig(time_scale=FAST, model="m")) as running:
        yield running


async def test_completion_non_stream_defaults_to_16_tokens(emu: RunningEmulator) -> None:
    client = oai(emu)
    resp = await client.completions.create(
        model="m", prompt="the world", extra_body={"ignore_eos": True}
    )
    assert resp.id.startswith("cmpl-")
    assert resp.object == "text_completion"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 16
    assert resp.usage.prompt_tokens == 3  # BOS + "the" + " world"
    assert resp.usage.total_tokens == 19
    assert resp.choices[0].text


async def test_completion_stream_one_chunk_per_token_with_usage_and_ids(
    emu: RunningEmulator,
) -> None:
    body = {
        "model": "m",
        "prompt": "the world",
        "max_tokens": 12,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "return_token_ids": True,
        "request_id": "abc",
    }
    events = await sse(emu.url + "/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks, usage_chunk = events[:-2], events[-2]
    assert len(chunks) == 12
    assert all(c["id"] == "cmpl-abc" and c["model"] == "m" for c in chunks)
    first = chunks[0]["choices"][0]
    assert first["prompt_token_ids"][0] == 0 and len(first["prompt_token_ids"]) == 3
    assert all(c["choices"][0]["prompt_token_ids"] is None for c in chunks[1:])
    assert all(len(c["choices"][0]["token_ids"]) == 1 for c in chunks)
    assert [c["usage"]["completion_tokens"] for c in chunks] == list(range(1, 13))
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"][0]["stop_reason"] is None
    assert "system_fingerprint" not in chunks[-1]  # it moves to the usage chunk
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 12
    assert usage_chunk["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage_chunk["system_fingerprint"].startswith("vllm-0.32.0-")


async def test_plain_stream_has_no_usage_and_fingerprint_on_last_chunk(
    emu: RunningEmulator,
) -> None:
    body = {"prompt": "the", "max_tokens": 3, "ignore_eos": True, "stream": True}
    events = await sse(emu.url + "/v1/completions", body)
    assert len(events) == 4 and events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert all(e["choices"][0]["token_ids"] is None for e in events[:-1])
    assert "system_fingerprint" in events[-2] and "system_fingerprint" not in events[0]


async def test_chat_stream_role_chunk_first_and_prompt_ids_top_level(
    emu: RunningEmulator,
) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_completion_tokens": 5,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    events = await sse(emu.url + "/v1/chat/completions", body)
    role, chunks, usage, done = events[0], events[1:-2], events[-2], events[-1]
    assert done == "[DONE]"
    assert role["object"] == "chat.completion.chunk" and role["id"].startswith("chatcmpl-")
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert role["usage"]["completion_tokens"] == 0
    assert isinstance(role["prompt_token_ids"], list) and role["prompt_token_ids"][0] == 0
    assert len(chunks) == 5
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks)
    assert "stop_reason" not in chunks[0]["choices"][0]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "stop_reason" in chunks[-1]["choices"][0]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5


async def test_chat_via_openai_sdk_streams_text(emu: RunningEmulator) -> None:
    client = oai(emu)
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None and usage.completion_tokens == 8
    full = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        extra_body={"ignore_eos": True},
    )
    assert full.choices[0].message.content == "".join(pieces)
    assert full.choices[0].message.role == "assistant"


async def test_continuation_from_token_ids_reproduces_the_rest(emu: RunningEmulator) -> None:
    body = {
        "prompt": "the model",
        "max_tokens": 40,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
    }
    events = await sse(emu.url + "/v1/completions", body)
    chunks = events[:-1]
    prompt_ids = chunks[0]["choices"][0]["prompt_token_ids"]
    generated = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    assert len(generated) == 40
    cont = {
        "prompt": prompt_ids + generated[:15],
        "max_tokens": 25,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
    }
    rest = await sse(emu.url + "/v1/completions", cont)
    assert rest[0]["choices"][0]["prompt_token_ids"] == prompt_ids + generated[:15]  # no BOS
    assert [t for c in rest[:-1] for t in c["choices"][0]["token_ids"]] == generated[15:]


async def test_seed_changes_the_tokens(emu: RunningEmulator) -> None:
    base = {"prompt": "the", "max_tokens": 10, "ignore_eos": True, "return_token_ids": True}
    _, a = await post(emu.url + "/v1/completions", base)
    _, b = await post(emu.url + "/v1/completions", {**base, "seed": 7})
    _, c = await post(emu.url + "/v1/completions", {**base, "seed": 7})
    assert a["choices"][0]["token_ids"] != b["choices"][0]["token_ids"]
    assert b["choices"][0]["token_ids"] == c["choices"][0]["token_ids"]


async def test_stop_string_truncates_text_and_reports_it(emu: RunningEmulator) -> None:
    base = {"prompt": "the", "max_tokens": 30, "ignore_eos": True, "return_token_ids": True}
    _, ref = await post(emu.url + "/v1/completions", base)
    text = ref["choices"][0]["text"]
    words = text.split()
    stop = words[5]
    cut = text.index(stop)
    events = await sse(emu.url + "/v1/completions", {**base, "stop": [stop], "stream": True})
    streamed = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert streamed == text[:cut]
    last = events[-2]["choices"][0]
    assert last["finish_reason"] == "stop" and last["stop_reason"] == stop
    _, body = await post(emu.url + "/v1/completions", {**base, "stop": stop})
    assert body["choices"][0]["text"] == text[:cut]
    assert body["usage"]["completion_tokens"] < 30


async def test_stop_token_id_ends_the_request(emu: RunningEmulator) -> None:
    base = {"prompt": "the", "max_tokens": 30, "ignore_eos": True, "return_token_ids": True}
    _, ref = await post(emu.url + "/v1/completions", base)
    ids = ref["choices"][0]["token_ids"]
    target = ids[7]
    first = ids.index(target)
    _, body = await post(emu.url + "/v1/completions", {**base, "stop_token_ids": [target]})
    choice = body["choices"][0]
    assert choice["token_ids"] == ids[: first + 1]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == target


async def test_min_tokens_holds_off_eos() -> None:
    cfg = EmulatorConfig(time_scale=0.0, eos_rate=0.5)
    async with run_emulator(cfg) as emu:
        base = {"prompt": "the", "max_tokens": 50}
        lengths = []
        for seed in range(8):
            _, body = await post(emu.url + "/v1/completions", {**base, "seed": seed})
            lengths.append(body["usage"]["completion_tokens"])
            assert body["choices"][0]["finish_reason"] == "stop"
        assert min(lengths) < 10
        for seed in range(4):
            _, body = await post(
                emu.url + "/v1/completions", {**base, "seed": seed, "min_tokens": 20}
            )
            assert body["usage"]["completion_tokens"] >= 21


async def test_partial_utf8_tokens_stream_as_empty_chunks(emu: RunningEmulator) -> None:
    body = {
        "prompt": "the",
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
    }
    events = await sse(emu.url + "/v1/completions", body)
    chunks = events[:-1]
    assert len(chunks) == 400  # one chunk per token, also for byte pieces
    texts = [c["choices"][0]["text"] for c in chunks]
    assert "" in texts
    assert any(ord(ch) > 127 for t in texts for ch in t)
    _, full = await post(
        emu.url + "/v1/completions", {k: v for k, v in body.items() if k != "stream"}
    )
    assert full["choices"][0]["text"] == "".join(texts)


async def test_prefix_cache_hits_show_in_usage(emu: RunningEmulator) -> None:
    prompt = " ".join(["the world"] * 40)  # 81 tokens: 5 full blocks of 16
    body = {"prompt": prompt, "max_tokens": 2, "ignore_eos": True}
    _, first = await post(emu.url + "/v1/completions", body)
    _, second = await post(emu.url + "/v1/completions", body)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 80


async def test_echo_prepends_the_prompt(emu: RunningEmulator) -> None:
    body = {"prompt": "the world", "max_tokens": 3, "ignore_eos": True}
    _, plain = await post(emu.url + "/v1/completions", body)
    _, echoed = await post(emu.url + "/v1/completions", {**body, "echo": True})
    assert echoed["choices"][0]["text"] == "the world" + plain["choices"][0]["text"]


async def test_chat_continue_final_message(emu: RunningEmulator) -> None:
    messages = [
        {"role": "user", "content": "tell me"},
        {"role": "assistant", "content": "the world"},
    ]
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    _, tokenized = await post(emu.url + "/tokenize", {"messages": messages, **extra})
    body = {
        "messages": messages,
        "max_tokens": 3,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
        **extra,
    }
    events = await sse(emu.url + "/v1/chat/completions", body)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[0]["prompt_token_ids"] == tokenized["tokens"]
    _, tail = await post(emu.url + "/detokenize", {"tokens": tokenized["tokens"][-2:]})
    assert tail["prompt"] == "the world"  # the prompt ends inside the assistant message
    _, plain = await post(emu.url + "/tokenize", {"messages": messages})
    assert plain["count"] > tokenized["count"]  # eot + a new assistant header
