"""A Mooncake slice replayed by the load generator through the proxy to a real vLLM.

The trace's blocks become token-id prompts (ids of words that are one token for the tiny
model's tokenizer, learnt through vLLM's ``/tokenize``).  The tiny model's context is small,
so a trace block maps to 64 tokens here instead of 512 (``block_tokens``): the prompts are
shorter, the sharing is the same, block for block.  Requests go one at a time and the KV
cache (256 MiB, 262k tokens) never evicts for this slice, so vLLM's own prefix-cache
counters must move by exactly what the trace says: queries by every prompt token, hits by
the reusable leading blocks in whole 32-token engine blocks, never a prompt's last token.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
from proxy_helpers import CLIENT_KEY, backend, proxy_config, running_proxy
from vllm_harness import VllmServer, metric, scrape

from loadgen.arrivals import ArrivalSpec
from loadgen.client import Target, make_session
from loadgen.metrics import summarize
from loadgen.mooncake import prefix_reuse, read_mooncake
from loadgen.runner import RunOptions, make_counter, measure
from loadgen.workloads import SloClass, WorkloadSpec, build_workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "lg"))
from mooncake_fixture import make_rows, write_trace

pytestmark = pytest.mark.realvllm

BLOCK_TOKENS = 64
REQUESTS = 24


async def test_vllm_prefix_cache_counts_the_traces_sharing(
    real_vllm: VllmServer, tmp_path: Path
) -> None:
    path = write_trace(tmp_path / "slice.jsonl", make_rows(REQUESTS, seed=5))
    spec = WorkloadSpec(
        REQUESTS,
        ArrivalSpec("trace", 20.0),
        (SloClass(60.0, 5.0, 1.0, "mooncake"),),  # a loaded CPU: only the sharing is judged
        trace=str(path),
        max_output_tokens=2,
        block_tokens=BLOCK_TOKENS,
        context_tokens=real_vllm.options.max_model_len,
    )
    items = build_workload(spec)
    assert not any(it.clipped_tokens for it in items)
    pools = [{"name": "main", "role": "mixed", "backends": [backend(real_vllm, "v0")]}]
    async with (
        running_proxy(proxy_config(pools, {"type": "round_robin"})) as proxy,
        httpx.AsyncClient(timeout=120) as http,
        make_session() as session,
    ):
        before = await scrape(http, real_vllm.base_url)
        target = Target(proxy.url, real_vllm.model, "completions", CLIENT_KEY)
        counter = await make_counter(session, target, None, real_vllm.base_url + "/tokenize")
        options = RunOptions(max_concurrency=1, request_timeout_s=300, progress=False)
        # a fresh seed per session: blocks an earlier run left in this vLLM's cache never match
        seed = f"mooncake-{os.getpid()}"
        result = await measure(session, target, items, counter, options, prompt_seed=seed)
        after = await scrape(http, real_vllm.base_url)
    s = summarize(result.records, result.duration_s)
    assert (s["completed"], s["failed"]) == (REQUESTS, 0), [r.error for r in result.records]
    assert s["prompt_tokens_max_error"] == 0  # vLLM counted exactly the ids we built

    def moved(name: str) -> float:
        return metric(after, name) - metric(before, name)

    expected = prefix_reuse(read_mooncake(path), BLOCK_TOKENS, engine_block=32)
    assert moved("vllm:prefix_cache_queries_total") == expected.prompt_tokens
    assert moved("vllm:prefix_cache_hits_total") == expected.reusable_tokens
    assert expected.share > 0.3
