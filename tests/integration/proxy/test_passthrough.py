"""Endpoints relayed to an engine (``/tokenize``, ``/detokenize``, ``/v1/responses``), the
engines' model cards, and per-token gaps on fast streams, against emulated vLLM engines."""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import openai
import pytest
from proxy_stack import CLIENT_KEY, MODEL, Stack, proxy_config, serve_stack

from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def call(method: str, url: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=AUTH if auth else {}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_models_keep_the_engines_fields(stack: Stack) -> None:
    status, listing = await call("GET", stack.url + "/v1/models")
    assert status == 200
    (card,) = listing["data"]
    _, direct = await call("GET", stack.emulators["v1"].url + "/v1/models", auth=False)
    assert card == direct["data"][0]  # max_model_len, root, parent, owned_by: the engine's
    assert card["id"] == MODEL and card["max_model_len"] > 0 and "root" in card
    status, one = await call("GET", stack.url + f"/v1/models/{MODEL}")
    assert status == 200 and one == card
    sdk = await stack.client.models.retrieve(MODEL)
    assert sdk.id == MODEL


async def test_unknown_model_card_is_vllms_404(stack: Stack) -> None:
    status, body = await call("GET", stack.url + "/v1/models/nope")
    assert status == 404
    assert body["error"]["type"] == "NotFoundError" and body["error"]["code"] == 404
    status, _ = await call("GET", stack.url + "/v1/models", auth=False)
    assert status == 401


@pytest.mark.parametrize("model", [MODEL, ""])
async def test_tokenize_and_detokenize_reach_a_backend_serving_the_model(
    stack: Stack, model: str
) -> None:
    emu = stack.emulators["v1"].url
    body = {"model": model, "prompt": "Hello there, proxy"}
    status, tokens = await call("POST", stack.url + "/tokenize", body)
    assert status == 200
    _, direct = await call("POST", emu + "/tokenize", {**body, "model": MODEL}, auth=False)
    assert tokens == direct and tokens["count"] == len(tokens["tokens"]) > 0
    status, text = await call(
        "POST", stack.url + "/detokenize", {"model": model, "tokens": tokens["tokens"]}
    )
    assert status == 200 and text["prompt"].endswith("Hello there, proxy")
    status, err = await call("POST", stack.url + "/tokenize", {**body, "model": "nope"})
    assert status == 404 and err["error"]["param"] == "model"
    relayed = stack.gateway.telemetry.relayed
    assert relayed[("/tokenize", "completed")] == 1
    assert relayed[("/detokenize", "completed")] == 1


async def test_responses_non_stream_counts_its_tokens(stack: Stack) -> None:
    before = sum(stack.gateway.telemetry.tokens.values())
    out = await stack.client.responses.create(model=MODEL, input="hello", max_output_tokens=7)
    assert out.usage is not None and 0 < out.usage.output_tokens <= 7
    assert out.output_text
    assert sum(stack.gateway.telemetry.tokens.values()) - before == out.usage.output_tokens
    assert stack.gateway.telemetry.relayed == {("/v1/responses", "completed"): 1}


async def test_responses_stream_is_relayed_event_by_event(stack: Stack) -> None:
    before = sum(stack.gateway.telemetry.tokens.values())
    stream = await stack.client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "hi"}], max_output_tokens=9, stream=True
    )
    kinds: list[str] = []
    text: list[str] = []
    final: Any = None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final is not None and final.usage is not None
    assert final.output_text == "".join(text)
    assert sum(stack.gateway.telemetry.tokens.values()) - before == final.usage.output_tokens


async def test_responses_wrong_model_is_refused_by_the_proxy(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        await stack.client.responses.create(model="nope", input="x", max_output_tokens=2)


async def test_fast_streams_record_one_gap_per_token() -> None:
    """An engine far faster than the proxy reads (several tokens per socket read), and still
    exactly tokens - 1 gaps per stream."""
    async with contextlib.AsyncExitStack() as stack:
        cfg = EmulatorConfig(flavor="vllm", model=MODEL, time_scale=0.002, seed=7)
        emus = {"v1": await stack.enter_async_context(run_emulator(cfg))}
        s = await serve_stack(stack, emus, proxy_config(emus))
        gaps = s.gateway.telemetry.gap_histogram("v1", MODEL)
        for n in (100, 250):
            before = gaps.count
            stream = await s.client.completions.create(
                model=MODEL, prompt="go", max_tokens=n, stream=True, extra_body={"ignore_eos": True}
            )
            async for _ in stream:
                pass
            assert gaps.count - before == n - 1
