"""Side by side with a real vLLM: the same openai SDK calls to the proxy and to vLLM directly
give the same errors (status, type, code, param, message) and the same bodies; the relayed
endpoints answer as vLLM does; and a 100-token stream records exactly 99 gaps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from proxy_helpers import (
    CLIENT_KEY,
    Proxy,
    backend,
    direct_client,
    proxy_config,
    read_stream,
    running_proxy,
)
from vllm_harness import VllmServer

pytestmark = [pytest.mark.realvllm, pytest.mark.timeout(900)]

MODEL = "tiny"
MSG = [{"role": "user", "content": "Tell me about queues."}]
VOLATILE = {"id", "created", "created_at"}  # differ between any two answers


@pytest.fixture(scope="module")
def vllm(real_vllm: VllmServer) -> VllmServer:
    return real_vllm


@pytest.fixture
async def proxy(vllm: VllmServer) -> AsyncIterator[Proxy]:
    pool = {"name": "main", "role": "mixed", "backends": [backend(vllm, "vllm-a")]}
    async with running_proxy(proxy_config([pool], {"type": "round_robin"})) as p:
        yield p


@pytest.fixture
async def both(vllm: VllmServer, proxy: Proxy) -> AsyncIterator[list[openai.AsyncOpenAI]]:
    """[vLLM directly, the proxy]: the same SDK calls go to each."""
    direct = direct_client(vllm)
    try:
        yield [direct, proxy.client]
    finally:
        await direct.close()


ERROR_CASES: dict[str, dict[str, Any]] = {
    "wrong-model": {"model": "nope", "messages": MSG, "max_tokens": 2},
    "empty-messages": {"model": MODEL, "messages": [], "max_tokens": 2},
    "messages-not-a-list": {"model": MODEL, "messages": "hi", "max_tokens": 2},
    "n-zero": {"model": MODEL, "messages": MSG, "n": 0},
    "negative-max-tokens": {"model": MODEL, "messages": MSG, "max_tokens": -1},
    "zero-max-tokens": {"model": MODEL, "messages": MSG, "max_tokens": 0},
    "stream-options-without-stream": {
        "model": MODEL,
        "messages": MSG,
        "max_tokens": 2,
        "stream_options": {"include_usage": True},
    },
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
async def test_errors_match_vllms(both: list[openai.AsyncOpenAI], proxy: Proxy, case: str) -> None:
    answers = []
    for client in both:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(**ERROR_CASES[case])
        answers.append((info.value.status_code, info.value.response.json()))
    (ref_status, ref), (got_status, got) = answers
    assert got_status == ref_status
    assert got == ref
    assert not proxy.gateway.telemetry.requests, "refused before admission"
    assert sum(proxy.gateway.telemetry.refused.values()) == 1


@pytest.mark.parametrize("model", ["", MODEL])
async def test_bodies_match_vllms(both: list[openai.AsyncOpenAI], model: str) -> None:
    """Greedy answers: the same body apart from ids and times (``model: ""`` included)."""
    bodies = []
    for client in both:
        out = await client.chat.completions.create(
            model=model,
            messages=MSG,
            max_tokens=6,
            temperature=0,  # type: ignore[arg-type]
        )
        body = {k: v for k, v in out.model_dump().items() if k not in VOLATILE}
        body["usage"].pop("prompt_tokens_details", None)  # a prefix-cache hit may differ
        bodies.append(body)
    assert bodies[1] == bodies[0]
    assert bodies[0]["model"] == MODEL


async def test_models_and_tokenizer_match_vllms(vllm: VllmServer, proxy: Proxy) -> None:
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(timeout=60) as http:
        ref = (await http.get(vllm.base_url + "/v1/models")).json()["data"][0]
        got = (await http.get(proxy.url + "/v1/models", headers=auth)).json()["data"][0]
        one = (await http.get(proxy.url + f"/v1/models/{MODEL}", headers=auth)).json()
        for key in ("max_model_len", "root", "parent", "owned_by", "id", "object"):
            assert got[key] == ref[key] == one[key], key
        for path, body in (
            ("/tokenize", {"model": MODEL, "prompt": "hello queues"}),
            ("/tokenize", {"model": MODEL, "messages": MSG}),
            ("/detokenize", {"model": MODEL, "tokens": [284, 80, 335]}),
        ):
            direct = await http.post(vllm.base_url + path, json=body)
            relayed = await http.post(proxy.url + path, json=body, headers=auth)
            assert relayed.status_code == direct.status_code == 200
            assert relayed.json() == direct.json(), path


async def test_responses_match_vllms(both: list[openai.AsyncOpenAI], proxy: Proxy) -> None:
    bodies = []
    for client in both:
        out = await client.responses.create(
            model=MODEL, input="hello", max_output_tokens=5, temperature=0
        )
        assert out.usage is not None and 0 < out.usage.output_tokens <= 5
        bodies.append(out)
    assert bodies[1].output_text == bodies[0].output_text
    assert set(bodies[1].model_dump()) == set(bodies[0].model_dump())
    made = bodies[1].usage.output_tokens if bodies[1].usage else 0
    kinds, texts = [], []
    for client in both:
        stream = await client.responses.create(
            model=MODEL, input="hello", max_output_tokens=5, temperature=0, stream=True
        )
        events = [event async for event in stream]
        # how many delta events carry the text depends on the detokenizer's timing
        kinds.append([k for i, k in enumerate(e.type for e in events) if k != events[i - 1].type])
        texts.append("".join(e.delta for e in events if e.type == "response.output_text.delta"))
        final = events[-1]
    assert kinds[1] == kinds[0] and kinds[0][-1] == "response.completed"
    assert texts[1] == texts[0]
    assert final.type == "response.completed" and final.response.usage is not None
    made += final.response.usage.output_tokens  # the proxy's stream (read last)
    assert proxy.gateway.telemetry.tokens["vllm-a"] == made
    relayed = proxy.gateway.telemetry.relayed
    assert relayed == {("/v1/responses", "completed"): 2}


async def test_a_100_token_stream_records_99_gaps(proxy: Proxy) -> None:
    """However vLLM's events coalesce into socket reads, tokens - 1 gaps per stream."""
    ended: list[Any] = []
    policy = proxy.gateway.policy
    original = policy.on_finish

    def spy(state: Any, now: float) -> None:
        ended.append(state)
        original(state, now)

    policy.on_finish = spy  # type: ignore[method-assign]
    gaps = proxy.gateway.telemetry.gap_histogram("vllm-a", MODEL)
    for attempt in range(3):
        before = gaps.count
        stream = await proxy.client.completions.create(
            model=MODEL,
            prompt="The proxy streams tokens",
            max_tokens=100,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True, "return_token_ids": True},
        )
        read = await read_stream(stream)
        assert len(read.token_ids) == 100
        assert gaps.count - before == 99, f"try {attempt}"
        assert ended[-1].gaps == 99 and ended[-1].tokens == 100
