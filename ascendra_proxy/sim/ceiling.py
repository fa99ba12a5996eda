"""The cluster's ceiling: completed requests per second under sustained overload with an
ideal placement, measured with the engine model.

Theory of operation.  No policy can complete requests faster than the engines can serve
them, and no placement can do better than one where (a) every prompt block that an earlier
request of the workload already computed is a prefix-cache hit, and (b) every engine always
has work waiting.  :func:`cluster_ceiling` measures that rate for one workload and one
cluster configuration:

1. Prompt token ids are the simulator's own (:class:`~ascendra_proxy.sim.flight.PromptIds`,
   same seed), so blocks shared in the workload are shared here.  The *ideal hit* of a
   request is its longest run of leading full blocks whose chained hashes appeared in any
   earlier request (at most ``(prompt - 1) // block`` blocks, as vLLM always computes the
   last prompt token).  The workload's *reusable share* is the sum of ideal hits over the
   sum of prompt tokens.
2. To make every ideal hit a real hit of the engine model wherever the request lands, its
   first ``hit`` tokens are replaced by the first ``hit`` tokens of one universal prefix,
   which every engine computes once before the clock starts.  Attention over the cached
   tokens, decode context and KV growth are therefore priced as in a real hit.  (Distinct
   shared prefixes occupy distinct KV blocks in reality; here they share one, so the
   ceiling is an upper bound, exact for workloads without sharing.)
3. Requests are dealt to the backends in arrival order (round robin: the same mix on every
   engine); each engine gets all of its share at time 0 and steps until done.  A prompt
   that does not fit the engine's context (the simulator's 400) is left out.
4. An engine's saturated rate is its completions per second between its first completion
   after the first ``warmup_share`` of its requests finished and its last completion while
   requests were still waiting (start-up and the final drain, when the batch empties, are
   not sustained overload); with too few completions in that window, requests / makespan.
   The ceiling is the sum over engines (each saturated at once: work balanced).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ascendra_proxy.core.prefix import block_hashes
from ascendra_proxy.engine import (
    EngineConfig,
    EngineModel,
    EngineRequest,
    LatencyProfile,
    SamplingSpec,
    Tokenizer,
)
from ascendra_proxy.engine.profile import load_profile
from ascendra_proxy.sim.flight import PromptIds
from ascendra_proxy.sim.setup import SimConfig
from loadgen.workloads import WorkItem, rng_for

__all__ = [
    "Ceiling",
    "EngineRun",
    "cluster_ceiling",
    "ideal_hits",
    "saturated_run",
]


def ideal_hits(prompts: Sequence[Sequence[int]], block_size: int) -> list[int]:
    """Per prompt (in arrival order), the tokens an ideal placement serves from cache."""
    seen: set[int] = set()
    out = []
    for ids in prompts:
        hashes = block_hashes(ids, block_size)
        limit = min(len(hashes), (len(ids) - 1) // block_size)
        hit = 0
        while hit < limit and hashes[hit] in seen:
            hit += 1
        seen.update(hashes)
        out.append(hit * block_size)
    return out


@dataclass(frozen=True, slots=True)
class EngineRun:
    requests: int
    makespan_s: float
    window_s: float  # the sustained-overload window (0 when it fell back to the makespan)
    window_completions: int
    rate_rps: float
    prefix_queries: int  # prompt tokens the engine looked up in its prefix cache
    prefix_hits: int  # of which it found cached


def saturated_run(
    config: EngineConfig,
    profile: LatencyProfile,
    prompts: Sequence[list[int]],
    outputs: Sequence[int],
    warm_prefix: Sequence[int] = (),
    seed: int = 0,
    warmup_share: float = 0.1,
    tokenizer: Tokenizer | None = None,
) -> EngineRun:
    """One engine with every request queued at time 0 (see the module docstring)."""
    engine = EngineModel(config, profile, seed=seed, tokenizer=tokenizer)
    if len(warm_prefix) > config.block_size:
        spec = SamplingSpec(max_tokens=1, min_tokens=1, ignore_eos=True)
        engine.add_request(EngineRequest("warm", list(warm_prefix), spec, 0.0))
        t = 0.0
        while engine.has_work():
            t += engine.step(t).duration_s
    stats0 = engine.stats()
    for i, (ids, out) in enumerate(zip(prompts, outputs, strict=True)):
        spec = SamplingSpec(max_tokens=out, min_tokens=out, ignore_eos=True, seed=i)
        engine.add_request(EngineRequest(f"r{i}", ids, spec, 0.0))
    now = 0.0
    done: list[tuple[float, bool]] = []  # (completion time, requests still waiting)
    while engine.has_work():
        res = engine.step(now)
        now += res.duration_s
        waiting = engine.num_waiting > 0
        done.extend((now, waiting) for o in res.outputs if o.finished)
    stats = engine.stats()
    queries = stats.prefix_cache_queries - stats0.prefix_cache_queries
    hits = stats.prefix_cache_hits - stats0.prefix_cache_hits
    n = len(done)
    first = max(1, round(warmup_share * n))
    saturated = [t for t, waiting in done if waiting]
    window = 0.0
    count = 0
    if len(saturated) > first:
        start, end = done[first - 1][0], saturated[-1]
        count = sum(1 for t in saturated if start < t <= end)
        window = end - start
    if count >= 2 and window > 0:
        rate = count / window
    else:
        window, count = 0.0, n
        rate = n / now if now > 0 else 0.0
    return EngineRun(n, now, window, count, rate, queries, hits)


@dataclass(frozen=True, slots=True)
class Ceiling:
    rate_rps: float
    reusable_share: float  # ideal hit tokens / prompt tokens of the workload
    hit_share: float  # what the engines actually hit in the ceiling runs
    left_out: int  # requests whose prompt + output exceed the context
    engines: tuple[EngineRun, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "ceiling_rps": round(self.rate_rps, 4),
            "reusable_share": round(self.reusable_share, 4),
            "hit_share": round(self.hit_share, 4),
            "left_out": self.left_out,
            "engines": [
                {
                    "requests": e.requests,
                    "rate_rps": round(e.rate_rps, 4),
                    "window_s": round(e.window_s, 3),
                    "makespan_s": round(e.makespan_s, 3),
                }
                for e in self.engines
            ],
        }


def _engine_config(cfg: SimConfig, i: int) -> tuple[EngineConfig, LatencyProfile]:
    s = cfg.proxy.backends()[i][1].engine_settings
    assert s.profile is not None  # checked when the config was loaded
    config = EngineConfig(
        max_num_seqs=s.max_num_seqs,
        max_num_batched_tokens=s.max_num_batched_tokens,
        block_size=s.block_size,
        num_gpu_blocks=s.num_gpu_blocks,
        scheduling_policy="fcfs",
        enable_prefix_caching=True,
        max_model_len=s.max_model_len,
    )
    return config, load_profile(s.profile)


def cluster_ceiling(cfg: SimConfig, items: Sequence[WorkItem], seed: int = 0) -> Ceiling:
    """The ceiling of ``cfg``'s backends on ``items`` (see the module docstring)."""
    tok = Tokenizer()
    ordered = sorted(items, key=lambda it: (it.arrival_s, it.index))
    ids_of = PromptIds(tok, seed)
    prompts = [ids_of.for_item(it) for it in ordered]
    n_backends = len(cfg.proxy.backends())
    block = cfg.proxy.backends()[0][1].engine_settings.block_size
    hits = ideal_hits(prompts, block)
    total_prompt = sum(len(p) for p in prompts)
    words = tok.generation_vocab().word_ids
    draw = rng_for(seed, "ceiling-prefix").integers(len(words), size=max(hits, default=0) + 1)
    universal = [tok.bos_token_id] + [int(words[j]) for j in draw]
    shares: list[tuple[list[list[int]], list[int]]] = [([], []) for _ in range(n_backends)]
    left_out = 0
    k = 0
    for it, ids, hit in zip(ordered, prompts, hits, strict=True):
        config, _ = _engine_config(cfg, k % n_backends)
        if len(ids) >= config.max_model_len or len(ids) + it.output_tokens > config.max_model_len:
            left_out += 1
            continue
        shares[k % n_backends][0].append(universal[:hit] + ids[hit:])
        shares[k % n_backends][1].append(it.output_tokens)
        k += 1
    runs = []
    for i, (ps, outs) in enumerate(shares):
        if not ps:
            continue
        config, profile = _engine_config(cfg, i)
        warm = universal[: min(len(universal), config.max_model_len - 1)]
        runs.append(saturated_run(config, profile, ps, outs, warm, seed=seed, tokenizer=tok))
    looked = sum(r.prefix_queries for r in runs)
    return Ceiling(
        rate_rps=sum(r.rate_rps for r in runs),
        reusable_share=sum(hits) / total_prompt if total_prompt else 0.0,
        hit_share=sum(r.prefix_hits for r in runs) / looked if looked else 0.0,
        left_out=left_out,
        engines=tuple(runs),
    )
