"""SLO classes travel to the proxy by name (``--slo-headers class``) and the proxy resolves them."""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from ascendra_proxy.config import parse_config
from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator
from ascendra_proxy.proxy.app import start_server
from loadgen.arrivals import ArrivalSpec
from loadgen.client import Target, make_session
from loadgen.lengths import Fixed
from loadgen.metrics import Outcome
from loadgen.runner import RunOptions, make_counter, measure
from loadgen.workloads import WorkloadSpec, build_workload, parse_slo_mix

MODEL = "llama3-8b"
REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_live_config_knows_the_three_tier_classes() -> None:
    doc = yaml.safe_load((REPO / "configs" / "emulated-2lp-1hp.yaml").read_text())
    classes = parse_config(doc).slo.classes
    assert {name: (t.ttft_ms / 1000, t.tpot_ms / 1000) for name, t in classes.items()} == {
        c.name: (c.ttft_s, c.tbt_s) for c in parse_slo_mix("three-tier")
    }


async def test_class_names_reach_the_proxy() -> None:
    spec = WorkloadSpec(
        12,
        ArrivalSpec("constant", 40.0),
        parse_slo_mix("three-tier"),
        prompt_len=Fixed(40),
        output_len=Fixed(3),
        seed=4,
    )
    items = build_workload(spec)
    assert {it.slo_class for it in items} == {"interactive", "standard", "batch"}
    async with contextlib.AsyncExitStack() as stack:
        emu_cfg = EmulatorConfig(flavor="vllm", model=MODEL, time_scale=0.02)
        emu = await stack.enter_async_context(run_emulator(emu_cfg))
        backend = {"name": "e0", "url": emu.url, "engine": "vllm", "model": MODEL}
        cfg = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "pools": [{"name": "main", "role": "mixed", "backends": [backend]}],
            "policy": {"type": "round_robin"},
            # "batch" left out on purpose: the proxy must refuse that name
            "slo": {"classes": {"interactive": {"ttft_ms": 1000, "tpot_ms": 50},
                                "standard": {"ttft_ms": 2000, "tpot_ms": 150}}},
        }  # fmt: skip
        runner, addrs = await start_server(parse_config(cfg), "127.0.0.1", 0, shutdown_grace_s=0.5)
        stack.push_async_callback(runner.cleanup)
        session = await stack.enter_async_context(make_session())
        target = Target(f"http://{addrs[0][0]}:{addrs[0][1]}", MODEL)
        counter = await make_counter(session, target, "emulator", None)
        options = RunOptions(progress=False, slo_headers="class")
        result = await measure(session, target, items, counter, options, prompt_seed="c")
    for r in result.records:
        if r.slo_class == "batch":
            assert r.outcome is Outcome.FAILED and "unknown SLO class 'batch'" in (r.error or "")
        else:
            assert r.outcome is Outcome.COMPLETED, r.error
