"""The official openai SDK against the proxy in front of emulated vLLM and SGLang engines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import openai
import pytest
from proxy_stack import ADMIN_KEY, CLIENT_KEY, MODEL, Stack, make_stack

from ascendra_proxy.emulator.faults import FaultConfig

EXACT = {"ignore_eos": True}


async def test_completions_non_stream(stack: Stack) -> None:
    out = await stack.client.completions.create(
        model=MODEL, prompt="Hello there", max_tokens=12, extra_body=EXACT
    )
    assert out.usage is not None and out.usage.completion_tokens == 12
    assert out.choices[0].text and out.choices[0].finish_reason == "length"


async def test_chat_non_stream(stack: Stack) -> None:
    out = await stack.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=9, extra_body=EXACT
    )
    assert out.usage is not None and out.usage.completion_tokens == 9
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content


@pytest.mark.parametrize("n", [1, 17, 64])
async def test_completions_stream_counts_every_token(stack: Stack, n: int) -> None:
    stream = await stack.client.completions.create(
        model=MODEL,
        prompt="count me",
        max_tokens=n,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    text, usage, chunks = "", None, 0
    async for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].text
            extra = chunk.choices[0].model_extra or {}
            assert "token_ids" not in extra, "proxy-added fields must be stripped"
        if chunk.usage:
            usage = chunk.usage
    assert usage is not None and usage.completion_tokens == n
    assert sum(stack.gateway.telemetry.tokens.values()) == n
    assert chunks <= n + 1


async def test_chat_stream(stack: Stack) -> None:
    stream = await stack.client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tell me"}],
        max_tokens=20,
        stream=True,
        extra_body=EXACT,
    )
    roles, content, ids = [], "", set()
    async for chunk in stream:
        ids.add(chunk.id)
        assert chunk.usage is None, "usage was not asked for"
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            content += ch.delta.content or ""
    assert roles == ["assistant"] and content and len(ids) == 1
    assert sum(stack.gateway.telemetry.tokens.values()) == 20


async def test_models_and_auth(stack: Stack) -> None:
    models = await stack.client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    bad = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.completions.create(model=MODEL, prompt="x", max_tokens=1)
    await bad.close()


async def test_bad_input_is_a_clean_4xx(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        await stack.client.completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError):
        await stack.client.completions.create(model=MODEL, prompt="x", extra_body={"n": "two"})
    with pytest.raises(openai.BadRequestError) as info:  # the engine's own 400, passed through
        await stack.client.completions.create(model=MODEL, prompt="x", max_tokens=10**7)
    assert "max" in str(info.value).lower()


async def until(cond: Callable[[], bool], within_s: float, what: str = "") -> float:
    """Poll ``cond``; the seconds it took to become true (fails after ``within_s``)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        assert loop.time() - t0 < within_s, f"not reached in {within_s} s: {what}"
        await asyncio.sleep(0.01)
    return loop.time() - t0


def engine_state(stack: Stack) -> dict[str, tuple[int, int]]:
    """(running, waiting) per emulated engine, for failure messages."""
    return {
        n: (e.engine.stats().num_running, e.engine.stats().num_waiting)
        for n, e in stack.emulators.items()
    }


async def wait_idle(stack: Stack, name: str, within_s: float = 10.0) -> float:
    def idle() -> bool:
        return stack.running(name) == 0

    return await until(idle, within_s, f"{name} idle; engines: {engine_state(stack)}")


def backend_available(s: Stack, name: str) -> bool:
    backend = s.gateway.backends.get(name)
    assert backend is not None
    return backend.breaker.available(s.gateway.clock())


@pytest.mark.parametrize("backend", ["v1", "sg1"])
async def test_client_disconnect_mid_stream_frees_the_engine(backend: str) -> None:
    async with make_stack(("v1", "sg1") if backend == "v1" else ("sg1", "v1")) as s:
        other = "sg1" if backend == "v1" else "v1"
        s.emulators[other].set_faults(FaultConfig(refuse=True))
        await until(lambda: not backend_available(s, other), 10, f"{other} marked down")
        engine = s.emulators[backend].engine
        made = engine.stats().generation_tokens_total
        stream = await s.client.completions.create(
            model=MODEL, prompt="long", max_tokens=3000, stream=True, extra_body=EXACT
        )
        got = 0
        async for _chunk in stream:
            got += 1
            if got == 5:
                break
        await stream.close()
        # Freed, not finished: run to its end the request would have made all 3,000 tokens
        # (6.6 s of modelled steps at the earliest); the wait's bound is not the point.
        await wait_idle(s, backend, 30.0)
        assert 5 <= engine.stats().generation_tokens_total - made < 3000


async def test_client_disconnect_before_first_token_frees_the_engine(stack: Stack) -> None:
    for emu in stack.emulators.values():
        emu.set_faults(FaultConfig(stall_s=30))  # no step runs: every request sits in prefill
    task = asyncio.create_task(
        stack.client.completions.create(model=MODEL, prompt="x", max_tokens=5, stream=True)
    )
    await until(lambda: any(stack.running(n) for n in stack.emulators), 10, "a request arrived")
    task.cancel()
    for name in stack.emulators:  # the stall lasts 30 s: idle before that means aborted
        await wait_idle(stack, name, 10.0)


async def test_retry_on_another_backend_before_first_byte() -> None:
    async with make_stack(("v1", "v2")) as s:
        s.emulators["v1"].set_faults(FaultConfig(error_rate=1.0, error_status=500))
        for _ in range(4):
            out = await s.client.completions.create(
                model=MODEL, prompt="x", max_tokens=4, extra_body=EXACT
            )
            assert out.usage is not None and out.usage.completion_tokens == 4
        errors = s.gateway.telemetry.upstream_errors
        assert set(errors) <= {("v1", "server_error")} and errors


async def test_backend_crash_mid_stream_is_an_in_stream_error() -> None:
    async with make_stack(("v1",)) as s:
        s.emulators["v1"].set_faults(FaultConfig(crash_after_tokens=10))
        stream = await s.client.completions.create(
            model=MODEL, prompt="x", max_tokens=200, stream=True, extra_body=EXACT
        )
        got = 0
        with pytest.raises(openai.APIError) as info:
            async for _chunk in stream:
                got += 1
        assert 0 < got <= 10 and "mid-stream" in str(info.value)
        assert s.gateway.telemetry.requests == {(MODEL, "backend_failed"): 1}


async def test_admin_api_and_status_command(
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = await stack.client.completions.create(
        model=MODEL, prompt="x", max_tokens=400, stream=True, extra_body=EXACT
    )
    async for _chunk in stream:
        break
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        reqs = (await http.get(stack.url + "/admin/requests")).json()["data"]
        backends = (await http.get(stack.url + "/admin/backends")).json()["data"]
        denied = await http.get(
            stack.url + "/admin/requests", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
        )
    assert denied.status_code == 401
    assert len(reqs) == 1 and reqs[0]["phase"] == "streaming" and reqs[0]["tokens"] >= 1
    assert {b["name"] for b in backends} == {"v1", "v2", "sg1"}
    assert all(b["scraped"] is not None for b in backends)

    from argparse import Namespace

    from ascendra_proxy.proxy import status_cli

    args = Namespace(url=stack.url, admin_key=ADMIN_KEY, timeout=5.0, limit=20)
    code = await asyncio.to_thread(status_cli.run, args)
    out = capsys.readouterr().out
    assert code == 0 and "sg1" in out and "1 request(s) in flight" in out
    await stream.close()
