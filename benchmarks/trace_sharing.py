"""How much prefix the Mooncake traces share, from the trace and as the engine model sees it.

For each trace (Mooncake traces, Moonshot AI, FAST'25): requests, prompt blocks, the share
of blocks whose hash id appeared in an earlier request (``repeated_block_share``), the
share of prompt tokens in those repeated leading blocks (``repeated_token_share``), the share
an engine with an unbounded cache can reuse (``cacheable_share``: whole 16-token blocks,
never a prompt's last token), prompts the 128k context clips, and the per-request TTFT SLO
of the catalog workload.  Then the engine model replays the first ``--engine-requests``
requests one at a time with a cache that never evicts (token-id prompts from the blocks,
one output token each) and its own prefix-cache counters give the measured hit share, next
to the trace's number for the same slice: equal by construction, checked here on the real
traces.  Last, the cache bound: the same sequential replay through an LRU cache of one
A100's KV (432k tokens) and of three (1.3M tokens, perfect affinity over the paper's
cluster), for the whole trace and its first ``--engine-requests``: what any placement can
reuse with that much cache.  Prints two tables, writes JSON.

    ASCENDRA_TRACES_DIR=../shared/data/traces \\
        .venv/bin/python benchmarks/trace_sharing.py --engine-requests 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ascendra_proxy.engine import (  # noqa: E402
    EngineConfig,
    EngineModel,
    EngineRequest,
    SamplingSpec,
    Tokenizer,
)
from ascendra_proxy.engine.profile import load_profile  # noqa: E402
from ascendra_proxy.sim.flight import PromptIds  # noqa: E402
from loadgen.arrivals import ArrivalSpec  # noqa: E402
from loadgen.catalog import load_trace_workloads, trace_workload_spec  # noqa: E402
from loadgen.mooncake import (  # noqa: E402
    lru_prefix_reuse,
    prefix_reuse,
    read_mooncake,
    repeated_block_share,
)
from loadgen.results import write_json  # noqa: E402
from loadgen.workloads import WorkItem, build_workload, clip_summary  # noqa: E402

ENGINE_BLOCK = 16
CACHES = {"one A100 (432k)": 432_000, "three A100s (1.3M)": 3 * 432_000}
TRACES = ("mooncake-conversation", "mooncake-synthetic")


def engine_replay(items: list[WorkItem], profile: str) -> tuple[int, int, float]:
    """(hit tokens, queried tokens, seconds) of a sequential replay, no eviction."""
    tok = Tokenizer()
    prompts = PromptIds(tok, seed=0)
    total = sum(it.prompt_tokens for it in items)
    config = EngineConfig(
        block_size=ENGINE_BLOCK,
        num_gpu_blocks=total // ENGINE_BLOCK + 2 * len(items) + 16,
        max_model_len=max(it.prompt_tokens for it in items) + 8,
    )
    engine = EngineModel(config, load_profile(profile), seed=0, tokenizer=tok)
    t0 = time.perf_counter()
    now = 0.0
    for it in items:
        ids = prompts.for_item(it)
        engine.add_request(
            EngineRequest(f"r{it.index}", ids, SamplingSpec(max_tokens=1, ignore_eos=True), now)
        )
        while engine.has_work():
            now += engine.step(now).duration_s
    stats = engine.stats()
    return stats.prefix_cache_hits, stats.prefix_cache_queries, time.perf_counter() - t0


def one_trace(name: str, engine_requests: int) -> dict[str, Any]:
    w = load_trace_workloads()[name]
    rows = read_mooncake(w.path)
    spec = trace_workload_spec(name, len(rows), ArrivalSpec("trace"), 0)
    items = build_workload(spec)
    caps = [it.prompt_tokens for it in items]
    plain = prefix_reuse(rows, prompt_caps=caps)
    cacheable = prefix_reuse(rows, engine_block=ENGINE_BLOCK, prompt_caps=caps)
    ttft = np.array([it.slo_ttft_s for it in items])
    out: dict[str, Any] = {
        "trace": w.trace,
        "requests": len(rows),
        "blocks": sum(len(r.hash_ids) for r in rows),
        "repeated_block_share": repeated_block_share(rows),
        "repeated_token_share": plain.share,
        "cacheable_share": cacheable.share,
        **clip_summary(items),
        "slo_ttft_s_median": float(np.median(ttft)),
        "slo_ttft_s_p90": float(np.percentile(ttft, 90)),
        "slo_ttft_at_floor": float(np.mean(ttft == w.slo_rule.floor_s)) if w.slo_rule else None,
    }
    n = min(engine_requests, len(rows))
    out["lru"] = {
        label: {
            "cache_tokens": cache,
            "whole_trace": lru_prefix_reuse(rows, cache).share,
            f"first_{n}": lru_prefix_reuse(rows[:n], cache).share if n else None,
            "unbounded_first": prefix_reuse(rows[:n]).share if n else None,
        }
        for label, cache in CACHES.items()
    }
    if n > 0:
        part = [replace(it, output_tokens=1) for it in items[:n]]
        hits, queries, wall = engine_replay(part, w.slo_rule.profile if w.slo_rule else "")
        expected = prefix_reuse(rows[:n], engine_block=ENGINE_BLOCK, prompt_caps=caps[:n])
        out["engine"] = {
            "requests": n,
            "hit_tokens": hits,
            "queried_tokens": queries,
            "hit_share": hits / queries,
            "trace_cacheable_share": expected.share,
            "exact": hits == expected.reusable_tokens and queries == expected.prompt_tokens,
            "wall_s": round(wall, 1),
        }
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'trace':<24}{'reqs':>7}{'blocks':>8}{'rep blk':>9}{'rep tok':>9}{'cacheable':>10}"
        f"{'clipped':>8}{'TTFT SLO p50/p90 s':>20}{'engine slice':>14}{'engine hit':>11}"
        f"{'trace':>8}{'exact':>7}"
    )
    lines = [head]
    for name, r in results.items():
        e = r.get("engine") or {}
        lines.append(
            f"{name:<24}{r['requests']:>7}{r['blocks']:>8}{r['repeated_block_share']:>9.1%}"
            f"{r['repeated_token_share']:>9.1%}{r['cacheable_share']:>10.1%}"
            f"{r['clipped_prompts']:>8}"
            f"{r['slo_ttft_s_median']:>11.1f} / {r['slo_ttft_s_p90']:<6.1f}"
            f"{e.get('requests', 0):>14}{e.get('hit_share', 0):>11.2%}"
            f"{e.get('trace_cacheable_share', 0):>8.2%}{e.get('exact', '-')!s:>7}"
        )
    lines += ["", f"{'LRU cache bound':<24}{'cache':<22}{'whole trace':>12}{'first N':>9}"]
    for name, r in results.items():
        for label, v in r["lru"].items():
            first = next((x for k, x in v.items() if k.startswith("first_")), None)
            cell = "-" if first is None else f"{first:.1%}"
            lines.append(f"{name:<24}{label:<22}{v['whole_trace']:>12.1%}{cell:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--engine-requests", type=int, default=2000, help="0: no engine replay")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "trace_sharing.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = {name: one_trace(name, args.engine_requests) for name in args.traces.split(",")}
    print(table(results))
    print("Mooncake traces, Moonshot AI, FAST'25 (Apache-2.0)")
    doc = {"results": results, "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
