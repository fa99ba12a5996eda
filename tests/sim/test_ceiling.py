"""The ceiling: saturated throughput with ideal placement, measured with the engine model."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_helpers import config_dict

from ascendra_proxy.engine import EngineConfig, Tokenizer
from ascendra_proxy.engine.profile import load_profile, parse_profile
from ascendra_proxy.sim.ceiling import cluster_ceiling, ideal_hits, saturated_run
from ascendra_proxy.sim.setup import parse_sim_config
from loadgen.arrivals import ArrivalSpec
from loadgen.lengths import parse_length_spec
from loadgen.workloads import PrefixSpec, SloClass, WorkItem, WorkloadSpec, build_workload

# Every step costs 10 ms, whatever the batch: the answer can be counted by hand.
FLAT = {
    "name": "flat-10ms",
    "description": "every step 10 ms",
    "step_ms": {
        "overhead_ms": 10.0,
        "linear_floor_ms": 0.0,
        "linear_intercept_ms": 0.0,
        "linear_per_token_ms": 0.0,
        "decode_attn_base_ms": 0.0,
        "decode_attn_per_ktok_ms": 0.0,
        "prefill_attn_base_ms": 0.0,
        "prefill_attn_coef_ms": 0.0,
    },
    "kv_cache": {"capacity_tokens": 16384},
    "engine_defaults": {"max_num_seqs": 4, "max_num_batched_tokens": 2048, "block_size": 16},
}


def distinct_prompts(n: int, length: int) -> list[list[int]]:
    words = Tokenizer().generation_vocab().word_ids
    return [[int(words[(i * length + j) % len(words)]) for j in range(length)] for i in range(n)]


def test_flat_profile_rate_counted_by_hand() -> None:
    # 4 sequences per batch; a request of 4 output tokens takes 4 steps (the step that ends
    # its prefill makes the first token), so the engine completes 4 requests every 40 ms:
    # 100 requests per second, whatever the warm-up and drain.
    config = EngineConfig(max_num_seqs=4, max_model_len=256, num_gpu_blocks=1024)
    profile = parse_profile(FLAT)
    run = saturated_run(config, profile, distinct_prompts(40, 16), [4] * 40)
    assert run.requests == 40
    assert run.rate_rps == pytest.approx(100.0)
    assert run.makespan_s == pytest.approx(0.4)
    assert run.window_completions == 32  # 40 minus the first batch, minus the drain batch


def test_cluster_ceiling_adds_engines(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(FLAT))
    doc = config_dict(
        {"type": "round_robin"},
        lp=2,
        hp=0,
        profile=str(path),
        max_num_seqs=4,
        num_gpu_blocks=1024,
        max_model_len=256,
    )
    cfg = parse_sim_config(doc)
    items = build_workload(
        WorkloadSpec(
            num_requests=80,
            arrivals=ArrivalSpec("poisson", 10.0),
            slo_classes=(SloClass(1.0, 0.1),),
            prompt_len=parse_length_spec("fixed:16"),
            output_len=parse_length_spec("fixed:4"),
        )
    )
    c = cluster_ceiling(cfg, items)
    assert c.rate_rps == pytest.approx(200.0)
    assert c.reusable_share == 0.0 and c.left_out == 0


def test_ideal_hits_are_leading_blocks_seen_before() -> None:
    a, b, c, x = ([k] * 4 for k in (11, 12, 13, 99))
    prompts = [a + b + c + [1], a + b + x + [2], x + a + [3], a + b + c + [4], a + b]
    # 1: nothing before; 2: a, b seen (x after them is new); 3: x alone is no prefix of
    # anything seen; 4: a b c seen; 5: at most (len - 1) // 4 = 1 block, the last token is
    # always computed.
    assert ideal_hits(prompts, 4) == [0, 8, 0, 12, 4]


def test_shared_prefixes_raise_the_ceiling_and_are_hit() -> None:
    def items(prefix: PrefixSpec | None) -> list[WorkItem]:
        own = 64 if prefix else 1088  # the same prompt lengths with and without sharing
        return build_workload(
            WorkloadSpec(
                num_requests=120,
                arrivals=ArrivalSpec("poisson", 10.0),
                slo_classes=(SloClass(1.0, 0.1),),
                prompt_len=parse_length_spec(f"fixed:{own}"),
                output_len=parse_length_spec("fixed:8"),
                prefix=prefix,
                seed=1,
            )
        )

    cfg = parse_sim_config(config_dict({"type": "round_robin"}, lp=2, hp=0, max_num_seqs=8))
    plain = cluster_ceiling(cfg, items(None))
    shared = cluster_ceiling(cfg, items(PrefixSpec(groups=2, tokens=1024)))
    assert plain.reusable_share == 0.0
    # 1024 of 1088 tokens are shared, all but the first request of each group reuse them.
    assert shared.reusable_share == pytest.approx(1024 / 1088 * 118 / 120, abs=0.01)
    assert shared.hit_share == pytest.approx(shared.reusable_share, abs=0.02)
    assert shared.rate_rps > 1.5 * plain.rate_rps
    assert load_profile("a100-llama3-8b").name == "a100-llama3-8b"
