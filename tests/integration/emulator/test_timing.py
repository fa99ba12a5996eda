"""Real-time pacing: token times follow the latency profile scaled by --time-scale."""

from __future__ import annotations

import time

import aiohttp
import pytest

from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator
from ascendra_proxy.engine.profile import load_profile


# Scales 0.5 and 1.0 (were 0.1 and 0.5): 150 steps then take 0.83 s / 1.66 s, so the 25 %
# upper bound is 0.2 s / 0.4 s rather than 41 ms, and each token has 5.5 ms or more to be
# made and read (a loaded machine could not keep up with 1.1 ms and fell behind the pace).
@pytest.mark.parametrize("scale", [0.5, 1.0])
async def test_stream_pace_matches_the_modelled_steps_without_drift(scale: float) -> None:
    tokens = 150
    profile = load_profile("a100-llama3-8b")
    prompt_len = 2  # BOS + "the"
    # Decode step k attends to prompt + k tokens; one sequence in the batch.
    expected = sum(profile.step_time(0, 1, prompt_len + k, 0.0) for k in range(1, tokens)) * scale
    cfg = EmulatorConfig(time_scale=scale)
    async with run_emulator(cfg) as emu, aiohttp.ClientSession() as session:
        body = {"prompt": "the", "max_tokens": tokens, "ignore_eos": True, "stream": True}
        arrivals: list[float] = []
        async with session.post(emu.url + "/v1/completions", json=body) as resp:
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    arrivals.append(time.monotonic())
    assert len(arrivals) == tokens
    took = arrivals[-1] - arrivals[0]
    assert expected * 0.9 < took < expected * 1.25, (took, expected)
