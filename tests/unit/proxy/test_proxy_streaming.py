"""Streaming through the proxy: forwarding, token counting, stripping, identity."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from fake_backend import FINGERPRINT, FakeBackend, Script
from proxy_rig import MODEL, RigFactory
from sse_client import read_events, text_of

from ascendra_proxy.core.decisions import Dispatch

EXPECTED_TEXT = " t100 t101 t102 t103 t104"


def tokens_counted(r: Any) -> int:
    return sum(r.gateway.telemetry.tokens.values())


async def test_plain_client_sees_a_plain_vllm_stream(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.post("/v1/completions", {"model": MODEL, "prompt": "hi", "stream": True})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events, done = await read_events(resp)
        assert done and text_of(events) == EXPECTED_TEXT
        for ev in events:
            assert "usage" not in ev and "token_ids" not in ev["choices"][0]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        sent = r.fakes[0].bodies[0]
        assert sent["return_token_ids"] is True
        assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
        assert tokens_counted(r) == 5


FP = "system_fingerprint"


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize(
    "script",
    [
        Script(),
        Script(omit_usage=True),  # no usage chunk: the held chunk goes out at [DONE]
        Script(omit_usage=True, omit_done=True),  # ... or at the end of the body
        Script(per_chunk=5),  # the only token chunk is also the terminal one
    ],
    ids=["usage_chunk", "no_usage_chunk", "no_done", "one_chunk"],
)
async def test_plain_client_gets_the_fingerprint_where_a_direct_client_does(
    make_rig: RigFactory, chat: bool, script: Script
) -> None:
    """The proxy asks for usage, so the engine stamps its usage chunk; a client that did not
    ask for usage gets the fingerprint on its terminal chunk (vLLM's place without usage)."""
    body: dict[str, Any] = {"model": MODEL, "stream": True}
    if chat:
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    async with make_rig([FakeBackend("a", script=script)]) as r:
        path = "/v1/chat/completions" if chat else "/v1/completions"
        events, done = await read_events(await r.post(path, body))
        assert done and text_of(events) == EXPECTED_TEXT
        *rest, last = events
        assert last["choices"][0]["finish_reason"] == "length"
        want = None if script.omit_usage else FINGERPRINT
        assert last.get(FP) == want and all(FP not in ev for ev in rest)
        assert all("usage" not in ev for ev in events)
        assert r.gateway.telemetry.requests == {(MODEL, "completed"): 1}


async def test_terminal_chunk_held_for_the_fingerprint_survives_a_broken_stream(
    make_rig: RigFactory,
) -> None:
    async with make_rig([FakeBackend("a", script=Script(die_before_usage=True))]) as r:
        body = {"model": MODEL, "prompt": "hi", "stream": True}
        events, _ = await read_events(await r.post("/v1/completions", body))
        assert text_of(events) == EXPECTED_TEXT
        finished = [ev for ev in events if ev.get("choices") and ev["choices"][0]["finish_reason"]]
        assert len(finished) == 1 and FP not in finished[0]


async def test_usage_client_gets_the_fingerprint_on_the_usage_chunk(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        body = {
            "model": MODEL,
            "prompt": "hi",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events, _ = await read_events(await r.post("/v1/completions", body))
        *rest, last = events
        assert last["choices"] == [] and last[FP] == FINGERPRINT
        assert all(FP not in ev for ev in rest)


async def test_client_options_are_honoured_exactly(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        body = {
            "model": MODEL,
            "prompt": "hi",
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
        }
        events, done = await read_events(await r.post("/v1/completions", body))
        assert done
        *content, last = events
        assert last["choices"] == [] and last["usage"]["completion_tokens"] == 5
        assert [ev["choices"][0]["token_ids"] for ev in content] == [
            [100],
            [101],
            [102],
            [103],
            [104],
        ]
        assert all("usage" not in ev for ev in content)


async def test_continuous_usage_when_asked(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        body = {
            "model": MODEL,
            "prompt": "hi",
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        events, _ = await read_events(await r.post("/v1/completions", body))
        assert [ev["usage"]["completion_tokens"] for ev in events] == [1, 2, 3, 4, 5, 5]
        assert all("token_ids" not in ch for ev in events for ch in ev["choices"])


@pytest.mark.parametrize(("per_chunk", "split"), [(1, True), (3, False), (4, True)])
async def test_tokens_are_counted_not_chunks(
    make_rig: RigFactory, per_chunk: int, split: bool
) -> None:
    fake = FakeBackend("a", script=Script(tokens=7, per_chunk=per_chunk, split_events=split))
    async with make_rig([fake]) as r:
        events, done = await read_events(
            await r.post("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
        )
        assert done and len(events) == -(-7 // per_chunk)
        assert tokens_counted(r) == 7
        gaps = r.gateway.telemetry.gaps[("a", MODEL)]
        assert gaps.count == 7 - 1  # per token, whatever the chunking


@pytest.mark.parametrize("coalesce", [1, 3, 8])
async def test_gaps_are_per_token_when_reads_coalesce(make_rig: RigFactory, coalesce: int) -> None:
    """Several events in one socket read: one gap for the read, zero gaps for the rest."""
    script = Script(tokens=20, gap_s=0.005, coalesce=coalesce)
    async with make_rig([FakeBackend("a", script=script)]) as r:
        finished: list[Any] = []
        original = r.gateway.policy.on_finish

        def spy(req: Any, now: float) -> None:
            finished.append(req)
            original(req, now)

        r.gateway.policy.on_finish = spy  # type: ignore[method-assign]
        body = {"model": MODEL, "prompt": "x", "stream": True}
        _, done = await read_events(await r.post("/v1/completions", body))
        assert done and tokens_counted(r) == 20
        gaps = r.gateway.telemetry.gaps[("a", MODEL)]
        assert gaps.count == 19
        (state,) = finished
        assert state.gaps == 19
        assert gaps.sum == pytest.approx(state.last_token_at - state.first_token_at)
        assert state.mean_gap == pytest.approx(state.mean_tbt)
        if coalesce > 1:  # at least the tokens behind the first of each write had zero gaps
            assert gaps.counts[0] >= 19 - 19 // coalesce - 1


async def test_engine_without_token_ids_is_counted_from_usage(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=6, per_chunk=2, omit_token_ids=True))
    async with make_rig([fake]) as r:
        await read_events(
            await r.post("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
        )
        assert tokens_counted(r) == 6


async def test_chat_stream_keeps_role_chunk_and_identity(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        events, done = await read_events(await r.post("/v1/chat/completions", body))
        assert done
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "prompt_token_ids" not in events[0]
        assert text_of(events) == EXPECTED_TEXT
        assert {ev["id"] for ev in events} == {"cmpl-fake"}
        assert {ev["object"] for ev in events} == {"chat.completion.chunk"}


async def test_missing_done_after_finish_is_completed(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a", script=Script(omit_done=True))]) as r:
        events, done = await read_events(
            await r.post("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
        )
        assert done and text_of(events) == EXPECTED_TEXT
        assert r.gateway.telemetry.requests == {(MODEL, "completed"): 1}


async def test_non_stream_body_is_forwarded(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.post("/v1/completions", {"model": MODEL, "prompt": "x"})
        assert resp.status == 200
        body = await resp.json()
        assert (
            body["choices"][0]["text"] == EXPECTED_TEXT and body["usage"]["completion_tokens"] == 5
        )
        assert "return_token_ids" not in r.fakes[0].bodies[0]
        assert tokens_counted(r) == 5


async def test_state_records_ttft_and_gaps(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=4, first_delay_s=0.1, gap_s=0.02))
    async with make_rig([fake]) as r:
        finished: list[Any] = []
        policy = r.gateway.policy
        original = policy.on_finish

        def spy(req: Any, now: float) -> None:
            finished.append(req)
            original(req, now)

        policy.on_finish = spy  # type: ignore[method-assign]
        await read_events(
            await r.post("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
        )
        (state,) = finished
        assert state.tokens == 4 and state.ttft is not None and state.ttft >= 0.1
        assert state.gaps == 3 and 0.015 <= state.mean_tbt <= 0.2
        assert state.prompt_tokens == 3 and state.prompt_tokens_exact
        assert r.gateway.telemetry.ttft[("a", MODEL, "true")].count == 1


@pytest.mark.parametrize(
    ("scheduling", "engine", "sent"),
    [
        ("fcfs", "vllm", None),
        ("priority", "vllm", 5),
        ("priority", "sglang", -5),
    ],
)
async def test_policy_priority_reaches_only_priority_scheduling_engines(
    make_rig: RigFactory, scheduling: str, engine: str, sent: int | None
) -> None:
    fake = FakeBackend("a", engine=engine)
    async with make_rig([fake]) as r:
        gw = r.gateway
        backend = gw.backends.get("a")
        assert backend is not None
        backend.info = replace(backend.info, priority_scheduling=scheduling == "priority")
        gw.policy.route = lambda *a, **k: Dispatch("a", "test", priority=5)  # type: ignore[method-assign]
        await read_events(
            await r.post("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
        )
        assert fake.bodies[0].get("priority") == sent


async def test_upstream_connections_are_reused_after_done(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(linger_s=0.02))  # body ends a bit after [DONE]
    async with make_rig([fake], scrape={"interval_s": 60}) as r:
        for _ in range(10):
            body = {"model": MODEL, "prompt": "x", "stream": True}
            await (await r.post("/v1/completions", body)).read()
            await asyncio.sleep(0.05)  # the finished attempt is released in the background
        assert fake.started == 10 and len(fake.peers) <= 2, fake.peers  # 2: a startup probe
