"""Carrying out policy tick actions: Assign, Move (offload), Drop, Warm, SetRole."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events, text_of

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.deadline import PRIORITY_MAX
from ascendra_proxy.core.decisions import Assign, Dispatch, Drop, Hold, Move, Reject, SetRole, Warm
from ascendra_proxy.proxy.ticker import apply_action

STREAM = {"model": MODEL, "prompt": [5, 6, 7, 8], "stream": True}


async def test_assign_releases_a_held_request(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a"), FakeBackend("b")]) as r:
        gw = r.gateway
        gw.policy.route = lambda *a, **k: Hold("proxy_queue")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: gw.held == 1)
        (flight,) = gw.flights.values()
        assert apply_action(gw, Assign(flight.state.id, Dispatch("b", "late_bind")))
        events, done = await read_events(await task)
        assert done and len(events) == 5
        assert [f.started for f in r.fakes] == [0, 1]
        assert gw.telemetry.decisions["late_bind"] == 1


async def test_a_held_request_counts_its_hold_once_however_often_it_asks(
    make_rig: RigFactory,
) -> None:
    """As in the simulator: the decision counter says how many requests were held, not how
    often a held request re-asked the policy."""
    async with make_rig([FakeBackend("a")]) as r:
        gw = r.gateway
        asked: list[float] = []

        def hold(*a: object, **k: object) -> Hold:
            asked.append(gw.clock())
            return Hold("proxy_queue")

        gw.policy.route = hold  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: len(asked) >= 3)  # parked, then re-asked at least twice
        (flight,) = gw.flights.values()
        assert apply_action(gw, Assign(flight.state.id, Dispatch("a", "late_bind")))
        _, done = await read_events(await task)
        assert done and gw.telemetry.decisions == {"proxy_queue": 1, "late_bind": 1}


async def test_offload_before_first_token_is_invisible_to_the_client(make_rig: RigFactory) -> None:
    slow = FakeBackend("lp", script=Script(first_delay_s=30))
    fast = FakeBackend("hp")
    async with make_rig([slow, fast]) as r:
        gw = r.gateway
        gw.policy.route = lambda *a, **k: Dispatch("lp", "first")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: slow.running == 1)
        (flight,) = gw.flights.values()
        assert apply_action(gw, Move(flight.state.id, Dispatch("hp", "offload_rescue"), "offload"))
        events, done = await read_events(await task)
        assert done and text_of(events) == " t100 t101 t102 t103 t104"
        await wait_until(lambda: slow.running == 0)
        assert flight.state.attempts == 2 and gw.telemetry.requests == {(MODEL, "completed"): 1}
        assert gw.telemetry.upstream_errors == {}, "a move is not a backend failure"


async def test_offload_of_a_unary_request_still_waiting_for_its_answer_is_immediate(
    make_rig: RigFactory,
) -> None:
    """A non-streaming answer's headers come with the whole answer: a move must interrupt the
    attempt that is still opening, not wait for it (first-byte budget: 600 s here)."""
    slow = FakeBackend("lp", script=Script(first_delay_s=30))
    fast = FakeBackend("hp")
    async with make_rig([slow, fast]) as r:
        gw = r.gateway
        gw.policy.route = lambda *a, **k: Dispatch("lp", "first")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", {**STREAM, "stream": False}))
        await wait_until(lambda: slow.running == 1)
        (flight,) = gw.flights.values()
        assert apply_action(gw, Move(flight.state.id, Dispatch("hp", "offload_rescue"), "offload"))
        resp = await asyncio.wait_for(task, 10)
        assert resp.status == 200 and (await resp.json())["usage"]["completion_tokens"] == 5
        await wait_until(lambda: slow.running == 0)  # the abort reached the LP engine
        assert slow.cancelled == 1 and fast.started == 1
        assert gw.telemetry.upstream_errors == {} and not any(gw.telemetry.retries.values())
        assert gw.backends.get("lp").breaker.available(gw.clock())  # type: ignore[union-attr]


async def test_a_second_move_while_the_continuation_is_opening(make_rig: RigFactory) -> None:
    """Migrated to an engine that answers late (after 2 s, inside the 5 s first-byte budget),
    then moved again before it answered: the stream keeps its tokens and continues on the
    third engine; the late engine is not blamed."""
    src = FakeBackend("a", script=Script(tokens=50, gap_s=0.02))
    late = FakeBackend("b", script=Script(tokens=3, headers_delay_s=2))
    third = FakeBackend("c", script=Script(tokens=3))
    async with make_rig([src, late, third]) as r:
        gw = r.gateway
        resp = await r.post("/v1/completions", {**STREAM, "max_tokens": 20})
        await resp.content.readline()
        (flight,) = gw.flights.values()
        await wait_until(lambda: flight.state.tokens >= 2)
        assert apply_action(gw, Move(flight.state.id, Dispatch("b", "tbt"), "migrate"))
        await wait_until(lambda: late.running == 1)
        assert apply_action(gw, Move(flight.state.id, Dispatch("c", "tbt"), "migrate"))
        events, done = await asyncio.wait_for(read_events(resp), 10)
        assert done and "error" not in events[-1]
        kept = len(third.bodies[0]["prompt"]) - 3
        assert flight.state.tokens == kept + 3 and flight.outcome is not None
        assert gw.telemetry.requests == {(MODEL, "completed"): 1}
        assert gw.telemetry.upstream_errors == {}
        await wait_until(lambda: late.running == 0 and src.running == 0)


async def test_drop_ends_the_request_with_the_policy_reject(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(first_delay_s=30))
    async with make_rig([fake]) as r:
        gw = r.gateway
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: fake.running == 1)
        (flight,) = gw.flights.values()
        reject = Reject(503, "infeasible", "cannot meet the deadline", "infeasible")
        assert apply_action(gw, Drop(flight.state.id, reject))
        resp = await task
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "infeasible"
        await wait_until(lambda: fake.running == 0)


async def test_migrate_mid_stream_continues_on_the_target(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=50, gap_s=0.02))
    async with make_rig([fake, FakeBackend("b", script=Script(tokens=3))]) as r:
        gw = r.gateway
        body = {**STREAM, "max_tokens": 20, "min_tokens": 10, "seed": 3}
        resp = await r.post("/v1/completions", body)
        await resp.content.readline()
        (flight,) = gw.flights.values()
        await wait_until(lambda: flight.state.tokens >= 2)
        assert apply_action(gw, Move(flight.state.id, Dispatch("b", "tbt"), "migrate"))
        events, done = await read_events(resp)
        assert done and "error" not in events[-1]
        (cont,) = r.fakes[1].bodies
        kept = len(cont["prompt"]) - 3  # the fake reports prompt token ids [1, 2, 3]
        assert kept >= 2 and cont["prompt"] == [1, 2, 3, *range(100, 100 + kept)]
        assert cont["max_tokens"] == 20 - kept and cont["min_tokens"] == 10 - kept
        assert cont["seed"] == 3 and cont["return_token_ids"] is True
        assert len(events) == kept + 2 and {e["id"] for e in events} == {"cmpl-fake"}  # 1 read
        assert "token_ids" not in events[-1]["choices"][0]
        assert gw.telemetry.migrations == {"tbt": 1}
        await wait_until(lambda: fake.running == 0)


async def test_migrate_with_stop_strings_is_refused(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", script=Script(tokens=50, gap_s=0.02))
    async with make_rig([fake, FakeBackend("b")]) as r:
        gw = r.gateway
        resp = await r.post("/v1/completions", {**STREAM, "stop": ["zz"]})
        await resp.content.readline()
        (flight,) = gw.flights.values()
        assert not apply_action(gw, Move(flight.state.id, Dispatch("b", "tbt"), "migrate"))
        events, done = await read_events(resp)
        assert done and "error" not in events[-1]
        assert gw.telemetry.decisions["migrate_unsupported"] == 1


@pytest.mark.parametrize("scheduling", ["fcfs", "priority"])
async def test_warm_sends_a_discarded_one_token_prefill(
    make_rig: RigFactory, scheduling: str
) -> None:
    lp, hp = FakeBackend("lp", script=Script(first_delay_s=0.3)), FakeBackend("hp")
    async with make_rig([lp, hp]) as r:
        gw = r.gateway
        backend = gw.backends.get("hp")
        assert backend is not None
        backend.info = replace(backend.info, priority_scheduling=scheduling == "priority")
        gw.policy.route = lambda *a, **k: Dispatch("lp", "first")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: lp.running == 1)
        (flight,) = gw.flights.values()
        assert flight.state.prefix_hashes == () and flight.state.prompt_tokens_exact
        assert apply_action(gw, Warm(flight.state.id, "hp", "warm_hp", priority=PRIORITY_MAX))
        await wait_until(lambda: hp.started == 1)
        warm = hp.bodies[0]
        assert warm["max_tokens"] == 1 and "stream" not in warm and warm["prompt"] == [5, 6, 7, 8]
        # behind every real request on a priority engine; none at all on an FCFS one
        assert warm.get("priority") == (PRIORITY_MAX if scheduling == "priority" else None)
        events, _ = await read_events(await task)
        assert len(events) == 5


async def test_set_role_is_mirrored_in_admin(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], auth={"admin_key": "k"}) as r:
        assert apply_action(r.gateway, SetRole("a", Role.HP, True, "adaptive_roles"))
        resp = await r.session.get(r.url + "/admin/backends", headers={"Authorization": "Bearer k"})
        assert (await resp.json())["data"][0]["role"] == "hp (draining)"


async def test_prompt_block_hashes_are_filled_for_token_prompts(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a", script=Script(first_delay_s=0.3))]) as r:
        body = {**STREAM, "prompt": list(range(40))}
        task = asyncio.create_task(r.post("/v1/completions", body))
        await wait_until(lambda: bool(r.gateway.flights))
        (flight,) = r.gateway.flights.values()
        assert len(flight.state.prefix_hashes) == 2  # two full 16-token blocks of 40 tokens
        await read_events(await task)
