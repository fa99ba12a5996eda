"""Mid-stream migration through the proxy on deterministic emulated vLLM engines.

Both engines run with the same seed and every request carries its own ``seed``, so the next
token is a function of the token prefix only: a stream continued on another engine from the
tokens already sent must be token for token and byte for byte the unmigrated stream.  Cuts
are placed exactly with the emulator's ``crash_after_tokens`` fault (transparent failover) or
by a policy ``Move(kind="migrate")`` while the client reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from migration_helpers import Transcript, ascendra_stack, pin_route, transcript
from proxy_stack import MODEL, Stack, make_stack

from ascendra_proxy.core.decisions import Dispatch, Move
from ascendra_proxy.emulator.faults import FaultConfig
from ascendra_proxy.proxy.ticker import apply_action

# With engine seed 7 and request seed 1, this prompt's output has byte-piece tokens at
# positions 10-12 (one 4-byte character completed by token 13): cuts 11, 12 and 13 fall
# inside it.
PROMPT = "hello world 0"
MULTIBYTE = range(10, 13)
SAMPLING = {"seed": 1, "ignore_eos": True, "return_token_ids": True}
CUTS = [1, 2, 7, 11, 12, 13, 30]


async def _run(
    s: Stack, chat: bool, max_tokens: int, prompt: str = PROMPT, seed: int = 1, **more: Any
) -> Any:
    extra = {**SAMPLING, "seed": seed, **more}
    opts: Any = {"include_usage": True}
    if chat:
        msgs: Any = [{"role": "user", "content": prompt}]
        return await s.client.chat.completions.create(
            model=MODEL,
            messages=msgs,
            max_tokens=max_tokens,
            stream=True,
            stream_options=opts,
            extra_body=extra,
        )
    return await s.client.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=max_tokens,
        stream=True,
        stream_options=opts,
        extra_body=extra,
    )


async def _reference(s: Stack, chat: bool, max_tokens: int) -> Transcript:
    ref = await transcript(await _run(s, chat, max_tokens), chat)
    assert len(ref.token_ids) == max_tokens and ref.finish == ["length"]
    return ref


def _same(got: Transcript, ref: Transcript) -> None:
    assert got.token_ids == ref.token_ids, "no token lost or repeated"
    assert got.text.encode() == ref.text.encode()
    assert "\ufffd" not in got.text
    assert got.finish == ref.finish
    assert len(got.ids) == 1 and len(got.created) == 1 and got.models == {MODEL}
    assert got.usage is not None and ref.usage is not None
    assert got.usage.prompt_tokens == ref.usage.prompt_tokens
    assert got.usage.completion_tokens == ref.usage.completion_tokens
    assert got.usage.total_tokens == ref.usage.total_tokens


def test_the_prompt_has_a_multibyte_character_where_the_cuts_are() -> None:
    assert all(c in CUTS for c in (11, 12, 13))


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("cut", CUTS)
async def test_crash_mid_stream_resumes_token_exactly(chat: bool, cut: int) -> None:
    async with make_stack(("v1", "v2")) as s:
        pin_route(s.gateway, ("v1", "v2"))
        ref = await _reference(s, chat, 48)
        if not chat:
            tail = ref.token_ids[MULTIBYTE.start : MULTIBYTE.stop + 1]
            assert len(tail) == 4, "the reference must contain the multi-byte character"
        s.emulators["v1"].set_faults(FaultConfig(crash_after_tokens=cut))
        tokens_before = dict(s.gateway.telemetry.tokens)
        got = await transcript(await _run(s, chat, 48), chat)
        _same(got, ref)
        tel = s.gateway.telemetry
        assert tel.tokens["v1"] - tokens_before["v1"] == cut, "the cut is where we put it"
        assert tel.migrations == {"failover": 1}
        assert tel.requests[(MODEL, "completed")] == 2


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("after", [1, 5, 20])
async def test_policy_migrate_moves_a_stream_token_exactly(chat: bool, after: int) -> None:
    async with make_stack(("v1", "v2")) as s:
        gw = s.gateway
        pin_route(gw, ("v1", "v2"))
        ref = await _reference(s, chat, 120)
        before = dict(gw.telemetry.tokens)
        stream = await _run(s, chat, 120)
        got = Transcript()
        moved = False
        async for chunk in stream:  # read the first tokens, then migrate, then the rest
            got.add(chunk, chat)
            if not moved and len(got.token_ids) >= after:
                (flight,) = gw.flights.values()
                move = Move(flight.state.id, Dispatch("v2", "tbt_slow"), "migrate")
                assert apply_action(gw, move)
                moved = True
                await _until(lambda: s.running("v1") == 0)  # the source dropped it
        _same(got, ref)
        assert gw.telemetry.migrations == {"tbt_slow": 1}
        assert gw.telemetry.decisions["tbt_slow"] == 1
        # every token made once, by the engine that had the stream: v1 up to the cut, then v2
        # (not a look at v2's gauge after the move: the continuation may not have reached
        # it yet on a loaded machine, or be over already on a fast one)
        made = {n: gw.telemetry.tokens.get(n, 0) - before.get(n, 0) for n in ("v1", "v2")}
        assert made["v1"] >= after and made["v2"] > 0, made
        assert made["v1"] + made["v2"] == 120, made
        assert s.running("v1") == s.running("v2") == 0


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("cut", [3, 19, 20])
async def test_crash_across_a_stop_string_ends_like_the_unmigrated_stream(
    chat: bool, cut: int
) -> None:
    """The stop string spans tokens 19 and 20: cut 20 splits it between the two engines."""
    async with make_stack(("v1", "v2")) as s:
        pin_route(s.gateway, ("v1", "v2"))
        free = await _reference(s, chat, 48)
        stop = free.pieces[19][-3:] + free.pieces[20][:3]
        assert len(stop) == 6 and free.text.find(stop) == len("".join(free.pieces[:20])) - 3
        ref = await transcript(await _run(s, chat, 48, stop=[stop]), chat)
        assert ref.finish == ["stop"] and ref.text == free.text[: free.text.find(stop)]
        s.emulators["v1"].set_faults(FaultConfig(crash_after_tokens=cut))
        got = await transcript(await _run(s, chat, 48, stop=[stop]), chat)
        assert got.text.encode() == ref.text.encode() and got.finish == ["stop"]
        assert got.token_ids == ref.token_ids
        assert len(got.ids) == 1 and got.usage.completion_tokens == ref.usage.completion_tokens
        assert s.gateway.telemetry.migrations == {"failover": 1}


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
async def test_a_continuation_that_fails_continues_again_on_sglang(chat: bool) -> None:
    async with make_stack(("v1", "v2", "sg1")) as s:
        pin_route(s.gateway, ("v1", "v2", "sg1"))
        ref = await _reference(s, chat, 48)
        s.emulators["v1"].set_faults(FaultConfig(crash_after_tokens=5))
        s.emulators["v2"].set_faults(FaultConfig(crash_after_tokens=7))
        got = await transcript(await _run(s, chat, 48), chat)
        _same(got, ref)
        tel = s.gateway.telemetry
        assert tel.migrations == {"failover": 2} and tel.tokens["sg1"] > 0
        assert s.emulators["sg1"].engine.stats().num_running == 0


async def test_backend_killed_under_many_streams_every_request_completes_once() -> None:
    n, max_tokens = 150, 32
    async with make_stack(("v1", "v2")) as s:
        gw = s.gateway

        async def one(i: int) -> Transcript:
            chat = i % 2 == 1
            return await transcript(await _run(s, chat, max_tokens, f"req {i}", seed=i), chat)

        refs = await asyncio.gather(*(one(i) for i in range(n)))
        base = dict(gw.telemetry.tokens)
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await _until(lambda: gw.telemetry.tokens["v1"] - base["v1"] >= 400)
        streaming_on_v1 = s.running("v1")
        s.emulators["v1"].crash()
        got = await asyncio.gather(*tasks)
        for i, (g, r) in enumerate(zip(got, refs, strict=True)):
            assert len(r.token_ids) == max_tokens, i
            _same(g, r)
        tel = gw.telemetry
        assert streaming_on_v1 > 0 and tel.migrations["failover"] >= 1
        assert tel.requests == {(MODEL, "completed"): 2 * n}
        assert sum(tel.tokens.values()) - sum(base.values()) >= n * max_tokens


async def _until(cond: Any, limit_s: float = 30.0) -> None:
    """Poll ``cond`` (the bound only stops a hang: a loaded machine is slow, not wrong)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not cond():
        assert loop.time() < end, f"condition not reached in {limit_s} s"
        await asyncio.sleep(0.01)


async def test_ascendra_migrates_a_stream_off_a_stalled_lp_engine_exactly() -> None:
    policy = {
        "tick_ms": 20,
        "ticket": {"running_frac": 0.5},
        "migration": {"enabled": True, "min_remaining_tokens": 4, "hp_running_frac": 1.0},
    }
    slo = {"default": {"ttft_ms": 5000, "tpot_ms": 40}}
    async with ascendra_stack(policy, slo) as s:
        blocker = asyncio.create_task(transcript(await _run(s, False, 3000, "busy"), False))
        await _until(lambda: s.running("hp1") == 1)  # HP took it (ticket) and now refuses
        ref = await _reference(s, False, 120)  # unmigrated, on LP
        got = Transcript()
        async for chunk in await _run(s, False, 120):
            got.add(chunk, False)
            if len(got.token_ids) == 3:  # the LP engines stall once the stream has started
                for name in ("lp1", "lp2"):
                    s.emulators[name].set_faults(FaultConfig(stall_s=2.0))
        blocker.cancel()
        _same(got, ref)
        tel = s.gateway.telemetry
        assert tel.tokens["lp1"] + tel.tokens["lp2"] > 0, (tel.decisions, tel.tokens)
        assert tel.migrations == {"migrate_tbt": 1}, (tel.decisions, tel.tokens)
