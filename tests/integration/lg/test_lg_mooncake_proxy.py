"""A Mooncake slice replayed by the load generator through the proxy to an emulated vLLM.

The prompts are token ids built from the trace's blocks; requests go one at a time
(``max_concurrency`` 1), so with a cache that never evicts, the engine's own prefix-cache
counters (``/metrics``) must show exactly the sharing the trace records: queries = every
prompt token, hits = the reusable leading blocks (whole engine blocks, never the last token).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ascendra_proxy.config import parse_config
from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator
from ascendra_proxy.proxy.app import start_server
from loadgen.arrivals import ArrivalSpec
from loadgen.client import Target, make_session
from loadgen.metrics import summarize
from loadgen.mooncake import prefix_reuse, read_mooncake
from loadgen.runner import RunOptions, make_counter, measure
from loadgen.workloads import SloClass, WorkloadSpec, build_workload

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "lg"))
from mooncake_fixture import make_rows, write_trace

MODEL = "llama31-8b"
KEY = "client-key"


async def prefix_counters(http: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """(queries, hits) in tokens from an engine's ``/metrics``."""
    text = (await http.get(url + "/metrics")).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values["vllm:prefix_cache_queries_total"], values["vllm:prefix_cache_hits_total"]


async def test_replayed_blocks_hit_the_engines_prefix_cache_exactly(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "slice.jsonl", make_rows(30, seed=11))
    spec = WorkloadSpec(
        30,
        ArrivalSpec("trace", 50.0),  # re-timed; the client runs them one at a time anyway
        (SloClass(5.0, 0.5, 1.0, "mooncake"),),
        trace=str(path),
        max_output_tokens=4,
        block_tokens=128,  # a trace block is 128 tokens here: shorter prompts, same sharing
    )
    items = build_workload(spec)
    emu_cfg = EmulatorConfig(flavor="vllm", model=MODEL, time_scale=0.02, num_gpu_blocks=20_000)
    async with contextlib.AsyncExitStack() as stack:
        emu = await stack.enter_async_context(run_emulator(emu_cfg))
        backend = {"name": "e0", "url": emu.url, "engine": "vllm", "model": MODEL}
        cfg = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "pools": [{"name": "main", "role": "mixed", "backends": [backend]}],
            "policy": {"type": "round_robin"},
            "auth": {"api_keys": [KEY]},
        }
        runner, addrs = await start_server(parse_config(cfg), "127.0.0.1", 0, shutdown_grace_s=0.5)
        stack.push_async_callback(runner.cleanup)
        proxy_url = f"http://{addrs[0][0]}:{addrs[0][1]}"
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        before = await prefix_counters(http, emu.url)
        session = await stack.enter_async_context(make_session())
        target = Target(proxy_url, MODEL, "completions", KEY)
        counter = await make_counter(session, target, None, emu.url + "/tokenize")
        options = RunOptions(max_concurrency=1, progress=False)
        result = await measure(session, target, items, counter, options, prompt_seed="slice")
        after = await prefix_counters(http, emu.url)
    s = summarize(result.records, result.duration_s)
    assert (s["completed"], s["failed"]) == (30, 0)
    assert s["prompt_tokens_max_error"] == 0  # the engine saw exactly the built token ids
    expected = prefix_reuse(read_mooncake(path), 128, engine_block=16)
    assert after[0] - before[0] == expected.prompt_tokens
    assert after[1] - before[1] == expected.reusable_tokens
    assert expected.share > 0.3
    (cls,) = s["attainment_by_class"]
    assert (cls["name"], cls["requests"]) == ("mooncake", 30)
