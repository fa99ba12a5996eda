"""Rescue economics after real moves through the proxy, on deterministic emulated vLLM engines.

The counters are checked against the target engine's own accounting: the emulator's prefix
cache counts, per admitted prompt, the tokens looked up and the tokens found, which are
exactly what ``ascendra_recomputed_prompt_tokens_total`` and
``ascendra_cached_prompt_tokens_total`` must add for a move's target (the emulator reports
``usage.prompt_tokens_details.cached_tokens`` like vLLM with ``--enable-prompt-tokens-details``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from migration_helpers import Transcript, pin_route, transcript
from proxy_stack import CLIENT_KEY, MODEL, Stack, make_stack

from ascendra_proxy.core.decisions import Dispatch, Move
from ascendra_proxy.emulator.faults import FaultConfig
from ascendra_proxy.proxy.ticker import apply_action

# long enough for full KV blocks (16 tokens) in the prompt, so a cached prefix can show
PROMPT = " ".join(f"word{i}" for i in range(40))
SAMPLING = {"seed": 1, "ignore_eos": True, "return_token_ids": True}
SLO = {"default": {"ttft_ms": 30000, "tpot_ms": 5000}}  # met unless a header says otherwise
CUT = 7


async def _run(s: Stack, max_tokens: int, headers: dict[str, str] | None = None) -> Any:
    return await s.client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=SAMPLING,
        extra_headers=headers,
    )


async def _stream(s: Stack, max_tokens: int) -> Transcript:
    return await transcript(await _run(s, max_tokens), chat=False)


def _lookups(s: Stack, name: str) -> tuple[int, int]:
    """(prompt tokens looked up, prompt tokens found) in the engine's prefix cache so far."""
    st = s.emulators[name].engine.stats()
    return st.prefix_cache_queries, st.prefix_cache_hits


async def test_failover_counts_the_continuation_prompt_and_the_targets_cache_hits() -> None:
    auth = {"api_keys": [CLIENT_KEY], "default_slo_access": {"min_ttft_ms": 1}}
    async with make_stack(("v1", "v2"), slo=SLO, auth=auth) as s:
        gw = s.gateway
        pin_route(gw, ("v2", "v1"))
        ref = await transcript(await _run(s, 48), chat=False)  # on v2: fills its prefix cache
        assert ref.pieces[CUT - 1], "the cut must follow a token that completed its text"
        prompt_tokens = ref.usage.prompt_tokens
        pin_route(gw, ("v1", "v2"))
        s.emulators["v1"].set_faults(FaultConfig(crash_after_tokens=CUT))
        queries, hits = _lookups(s, "v2")
        strict_ttft = {"x-slo-ttft-ms": "1"}  # this request's own SLO: its TTFT must miss
        got = await transcript(await _run(s, 48, strict_ttft), chat=False)
        assert got.token_ids == ref.token_ids
        tel = gw.telemetry
        assert tel.migrations == {"failover": 1}
        assert tel.moved == {(MODEL, "failover", "missed", "met"): 1}
        assert tel.slo[(MODEL, "", "missed", "met")] == 1, "the verdict slo_requests gives"
        assert tel.recomputed == {"v1": 0, "v2": prompt_tokens + CUT}
        v2_queries, v2_hits = _lookups(s, "v2")
        assert tel.recomputed["v2"] == v2_queries - queries
        assert tel.cached == {"v1": 0, "v2": v2_hits - hits}
        assert tel.cached["v2"] > 0, "v2 had the prompt and the first tokens cached"


async def test_offload_before_the_first_token_counts_the_prompt_resent() -> None:
    async with make_stack(("v1", "v2"), slo=SLO) as s:
        gw = s.gateway
        pin_route(gw, ("v1", "v2"))
        s.emulators["v1"].set_faults(FaultConfig(stall_s=3.0))  # no first token from v1
        queries, hits = _lookups(s, "v2")
        # the proxy answers with the first token: the client waits in create() meanwhile
        task = asyncio.create_task(_stream(s, 16))
        await _until(lambda: s.running("v1") == 1 and len(gw.flights) == 1)
        (flight,) = gw.flights.values()
        assert not flight.state.started
        move = Move(flight.state.id, Dispatch("v2", "offload_ttft"), "offload")
        assert apply_action(gw, move)
        got = await task
        assert len(got.token_ids) == 16 and got.finish == ["length"]
        tel = gw.telemetry
        assert tel.moved == {(MODEL, "offload_ttft", "met", "met"): 1}
        assert tel.tokens["v1"] == 0 and tel.migrations == {}
        v2_queries, v2_hits = _lookups(s, "v2")
        assert tel.recomputed == {"v1": 0, "v2": got.usage.prompt_tokens}
        assert tel.recomputed["v2"] == v2_queries - queries
        assert tel.cached == {"v1": 0, "v2": v2_hits - hits}


async def _until(cond: Any, limit_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)
