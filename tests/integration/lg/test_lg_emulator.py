"""The load generator end to end against the project's engine emulator (vLLM flavour)."""

from __future__ import annotations

import pytest

from loadgen.arrivals import ArrivalSpec
from loadgen.client import Target, base_url, discover_model, make_session
from loadgen.lengths import Uniform
from loadgen.metrics import Outcome, summarize
from loadgen.runner import RunOptions, make_counter, measure
from loadgen.workloads import DisconnectSpec, PrefixSpec, SloClass, WorkloadSpec, build_workload

emulator = pytest.importorskip(
    "ascendra_proxy.emulator.server", reason="the engine emulator is not available"
)

FAST = 0.05  # emulator time scale: 20x faster than the modelled GPU


def workload(n: int = 24, disconnect: DisconnectSpec | None = None) -> WorkloadSpec:
    return WorkloadSpec(
        num_requests=n,
        arrivals=ArrivalSpec("poisson", 30.0),
        slo_classes=(SloClass(0.5, 0.05), SloClass(1e-6, 1e-6, 0.5)),  # second: never met
        prompt_len=Uniform(30, 1500),
        output_len=Uniform(4, 40),
        prefix=PrefixSpec(groups=2, tokens=128),
        disconnect=disconnect,
        seed=11,
    )


@pytest.mark.parametrize(
    ("endpoint", "tokenizer"),
    [("completions", None), ("chat", None), ("completions", "emulator")],
)
async def test_run_against_the_emulator(endpoint: str, tokenizer: str | None) -> None:
    items = build_workload(workload())
    cfg = emulator.EmulatorConfig(time_scale=FAST)
    async with emulator.run_emulator(cfg) as emu, make_session() as session:
        model = await discover_model(session, emu.url, None)
        target = Target(base_url(emu.url + "/v1"), model, endpoint)
        counter = await make_counter(session, target, tokenizer, None)
        result = await measure(
            session, target, items, counter, RunOptions(progress=False), prompt_seed=endpoint
        )
    s = summarize(result.records, result.duration_s)
    assert (s["completed"], s["failed"]) == (24, 0)
    assert s["prompt_tokens_max_error"] == 0  # exact-length prompts, template included for chat
    assert all(r.tokens == r.output_tokens for r in result.records)  # ignore_eos + min_tokens
    impossible = [r for r in result.records if r.slo_ttft_s < 1e-3]
    assert 0 < len(impossible) < 24
    assert round(s["slo_attainment"] * 24) <= 24 - len(impossible)
    assert s["ttft_p50"] > 0 and s["tbt_mean_p50"] > 0


async def test_disconnecting_clients_against_the_emulator() -> None:
    items = build_workload(workload(12, disconnect=DisconnectSpec(0.5, 0.02)))
    cfg = emulator.EmulatorConfig(time_scale=1.0)  # real time: every stream outlives 20 ms
    async with emulator.run_emulator(cfg) as emu, make_session() as session:
        target = Target(base_url(emu.url), await discover_model(session, emu.url, None))
        counter = await make_counter(session, target, None, None)
        options = RunOptions(progress=False)
        result = await measure(session, target, items, counter, options, prompt_seed="d")
    outcomes = [r.outcome for r in result.records]
    assert outcomes.count(Outcome.DISCONNECTED) == 6
    assert outcomes.count(Outcome.COMPLETED) == 6
