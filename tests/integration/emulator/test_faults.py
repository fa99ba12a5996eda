"""Fault injection: crash, stall, error rate, refuse; at start and at run time."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
import openai
import pytest
from emu_helpers import get_json, oai, post, wait_for

from ascendra_proxy.emulator.faults import FaultConfig, parse_fault_specs
from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator

LONG = {"prompt": "the", "max_tokens": 3000, "ignore_eos": True, "stream": True}


async def _stream_until_error(url: str, body: dict[str, Any]) -> tuple[int, BaseException | None]:
    """Read a stream to its end; return (events seen, the exception that ended it)."""
    events = 0
    try:
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events += 1
                if line.startswith(b"data: [DONE]"):
                    return events, None
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        return events, exc
    return events, None


async def _healthy(emu: RunningEmulator) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(emu.url + "/health") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


def test_fault_specs_parse() -> None:
    cfg = parse_fault_specs(["crash-after-tokens=5", "stall=2@1.5", "error-rate=0.2", "refuse"])
    assert cfg == FaultConfig(
        crash_after_tokens=5, stall_s=2.0, stall_after_s=1.5, error_rate=0.2, refuse=True
    )
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_fault_specs(["explode=1"])
    with pytest.raises(ValueError, match="error_rate"):
        parse_fault_specs(["error-rate=2"])


async def test_crash_after_tokens_closes_every_stream_mid_chunk() -> None:
    cfg = EmulatorConfig(time_scale=0.05, faults=FaultConfig(crash_after_tokens=60))
    async with run_emulator(cfg) as emu:
        url = emu.url + "/v1/completions"
        results = await asyncio.gather(*(_stream_until_error(url, LONG) for _ in range(3)))
        for events, exc in results:
            assert isinstance(exc, aiohttp.ClientPayloadError), exc
            assert 0 < events < 60
        assert emu.engine.num_running == 0 and emu.ctx.loop.num_open_streams == 0
        assert not await _healthy(emu)  # the crashed server refuses connections
        status, state = await get_json(emu.url + "/emulator/faults")
        assert status == 200 and state["crashed"] and state["refusing"]
        status, state = await post(emu.url + "/emulator/faults", {})
        assert status == 200 and not state["crashed"]
        assert await _healthy(emu)
        events, exc = await _stream_until_error(url, {**LONG, "max_tokens": 5})
        assert exc is None and events == 6


async def test_crash_after_seconds_then_recover() -> None:
    """The timer is armed when the server starts, so the clock starts before it does: the
    crash then cannot come before 0.2 s on any machine (the 3,000-token stream would end on
    its own after 3.3 s).  It refuses for 2 s, long enough for a loaded machine to look."""
    faults = FaultConfig(crash_after_s=0.2, crash_recover_s=2.0)
    start = time.monotonic()
    async with run_emulator(EmulatorConfig(time_scale=0.1, faults=faults)) as emu:
        _, exc = await _stream_until_error(emu.url + "/v1/completions", LONG)
        crashed = time.monotonic() - start
        assert isinstance(exc, aiohttp.ClientPayloadError)
        assert 0.2 <= crashed < 2.0  # not before 0.2 s (upper: start-up on a loaded CI)
        assert not await _healthy(emu), f"recovered already, {time.monotonic() - start:.2f} s in"
        await wait_for(lambda: _healthy(emu), limit=10.0)


async def test_non_stream_request_loses_its_connection_on_crash() -> None:
    async with run_emulator(EmulatorConfig(time_scale=0.1)) as emu:
        body = {"prompt": "the", "max_tokens": 3000, "ignore_eos": True}
        task = asyncio.create_task(post(emu.url + "/v1/completions", body))
        await wait_for(lambda: _running(emu))
        status, _ = await post(emu.url + "/emulator/faults", {"crash_now": True})
        assert status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await task


async def _running(emu: RunningEmulator) -> bool:
    return emu.engine.num_running > 0


async def test_stall_stops_the_steps() -> None:
    """The stall is put in force once the stream runs (armed at server start, a loaded
    machine's first token could come after it): 0.1 s later, while the remaining ~180
    tokens still need at least 0.2 s of modelled steps, the steps stop for 1 s."""
    async with run_emulator(EmulatorConfig(time_scale=0.1)) as emu:
        arrivals: list[float] = []
        async with aiohttp.ClientSession() as session:
            body = {**LONG, "max_tokens": 200}
            async with session.post(emu.url + "/v1/completions", json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        arrivals.append(time.monotonic())
                        if len(arrivals) == 20:
                            emu.set_faults(FaultConfig(stall_s=1.0, stall_after_s=0.1))
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert len(arrivals) == 201
        assert max(gaps) >= 0.9, sorted(gaps)[-3:]
        assert sorted(gaps)[-2] < 0.5, sorted(gaps)[-3:]  # one stall, otherwise steady


async def test_error_rate_fails_a_seeded_share_with_vllm_json() -> None:
    async def outcomes(seed: int) -> list[int]:
        cfg = EmulatorConfig(time_scale=0.0, seed=seed, faults=FaultConfig(error_rate=0.5))
        async with run_emulator(cfg) as emu:
            body = {"prompt": "the", "max_tokens": 1}
            statuses = []
            for _ in range(30):
                status, resp = await post(emu.url + "/v1/completions", body)
                statuses.append(status)
                if status != 200:
                    assert resp["error"]["type"] == "InternalServerError"
                    assert resp["error"]["code"] == 500
            return statuses

    first = await outcomes(3)
    assert 5 <= first.count(500) <= 25 and first.count(200) + first.count(500) == 30
    assert await outcomes(3) == first


async def test_error_rate_set_at_run_time_reaches_the_sdk() -> None:
    async with run_emulator(EmulatorConfig(time_scale=0.0)) as emu:
        status, _ = await post(
            emu.url + "/emulator/faults", {"error_rate": 1.0, "error_status": 503}
        )
        assert status == 200
        with pytest.raises(openai.InternalServerError) as info:
            await oai(emu).completions.create(model=emu.ctx.model, prompt="x", max_tokens=1)
        assert info.value.status_code == 503
        status, _ = await post(emu.url + "/emulator/faults", {"bogus": 1})
        assert status == 400


async def test_refuse_drops_connections_but_admin_answers() -> None:
    async with run_emulator(EmulatorConfig(time_scale=0.0, faults=FaultConfig(refuse=True))) as emu:
        assert not await _healthy(emu)
        with pytest.raises(openai.APIConnectionError):
            await oai(emu).completions.create(model=emu.ctx.model, prompt="x", max_tokens=1)
        status, state = await get_json(emu.url + "/emulator/faults")
        assert status == 200 and state["refusing"]
        await post(emu.url + "/emulator/faults", {})
        assert await _healthy(emu)
