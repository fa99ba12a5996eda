"""Mooncake trace replay: parsing, block-exact prompts, clipping, the prefill-scaled SLO."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from mooncake_fixture import make_rows, write_trace

from ascendra_proxy.engine import EngineConfig, EngineModel, EngineRequest, SamplingSpec, Tokenizer
from ascendra_proxy.engine.profile import load_profile
from ascendra_proxy.sim.flight import PromptIds
from loadgen.arrivals import ArrivalSpec
from loadgen.blocks import BlockTokens
from loadgen.mooncake import (
    MooncakeRow,
    lru_prefix_reuse,
    parse_mooncake_lines,
    prefix_reuse,
    read_mooncake,
    repeated_block_share,
)
from loadgen.traces import TraceError
from loadgen.workloads import PrefillSlo, SloClass, WorkItem, WorkloadSpec, build_workload

LINE = '{"timestamp": 1500, "input_length": 1030, "output_length": 7, "hash_ids": [4, 5, 9]}'


def test_parses_times_in_seconds_lengths_and_blocks() -> None:
    rows = parse_mooncake_lines([LINE.encode(), b"\n", LINE.replace("1500", "2000")], "t.jsonl")
    assert rows[0] == MooncakeRow(1.5, 1030, 7, (4, 5, 9))
    assert rows[0].last_block_tokens == 6
    assert [r.arrived_at for r in rows] == [1.5, 2.0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "t.jsonl:2: not JSON"),
        ('{"timestamp": 0, "output_length": 1, "hash_ids": [1]}', "field 'input_length'"),
        (LINE.replace("[4, 5, 9]", "[4, 5]"), "2 blocks for 1030 tokens"),
        (LINE.replace("[4, 5, 9]", "[4, -5, 9]"), "field 'hash_ids'"),
        (LINE.replace('"output_length": 7', '"output_length": 0'), "at least 1"),
        (LINE.replace("1500", "1000"), "t.jsonl:2: field 'timestamp': arrivals must not go"),
    ],
)
def test_bad_lines_name_file_line_and_field(line: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_mooncake_lines([LINE, line], "t.jsonl")


def test_empty_and_missing_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no requests"):
        parse_mooncake_lines([], "t.jsonl")
    with pytest.raises(TraceError, match="cannot read"):
        read_mooncake(tmp_path / "absent.jsonl")


def rows_of(*specs: tuple[int, list[int]]) -> list[MooncakeRow]:
    return [MooncakeRow(0.0, n, 1, tuple(ids)) for n, ids in specs]


def test_prefix_reuse_by_hand() -> None:
    rows = rows_of(
        (1100, [1, 2, 3]),  # 512 + 512 + 76
        (1100, [1, 2, 3]),  # the same prompt again: all of it repeats
        (700, [1, 4]),  # shares block 1 only
        (1536, [1, 2, 3]),  # block 3 was 76 tokens before, 512 now: 1024 + 76 shared
        (600, [5, 2]),  # block 2 behind a new block: ids are chained, so nothing is shared
    )
    plain = prefix_reuse(rows)
    assert plain.prompt_tokens == 1100 + 1100 + 700 + 1536 + 600
    assert plain.reusable_tokens == 1100 + 512 + 1100
    engine = prefix_reuse(rows, engine_block=16)  # whole 16-token blocks, never the last token
    assert engine.reusable_tokens == (1099 // 16) * 16 + 512 + (1100 // 16) * 16
    scaled = prefix_reuse(rows, block_tokens=8)  # 76 of 512 -> ceil(76 * 8 / 512) = 2 tokens
    assert scaled.prompt_tokens == 18 + 18 + 11 + 24 + 10
    assert scaled.reusable_tokens == 18 + 8 + 18
    assert repeated_block_share(rows) == pytest.approx(8 / 13)  # by id, chained or not


def test_block_tokens_are_fixed_per_hash_id() -> None:
    a = BlockTokens(range(100, 200), seed=3, block_tokens=512)
    b = BlockTokens(range(100, 200), seed=3, block_tokens=512, cache_blocks=1)
    assert a.block(7) == b.block(7) and a.block(8) != a.block(7)
    assert len(a.block(7)) == 512 and set(a.block(7)) <= set(range(100, 200))
    assert a.prompt([7, 8], 600) == a.block(7) + a.block(8)[:88]
    assert BlockTokens(range(100, 200), seed=4, block_tokens=512).block(7) != a.block(7)
    with pytest.raises(ValueError, match="cannot make"):
        a.prompt([7], 513)


def spec_for(path: Path, n: int, **changes: object) -> WorkloadSpec:
    spec = WorkloadSpec(n, ArrivalSpec("trace"), (SloClass(1.0, 0.15),), trace=str(path))
    return replace(spec, **changes)  # type: ignore[arg-type]


def test_workload_from_a_trace_keeps_times_lengths_and_blocks(tmp_path: Path) -> None:
    rows = make_rows(40)
    path = write_trace(tmp_path / "m.jsonl", rows)
    items = build_workload(spec_for(path, 40))
    stamps = [float(r["timestamp"]) for r in rows]  # type: ignore[arg-type]
    assert [it.arrival_s for it in items] == pytest.approx([(t - stamps[0]) / 1000 for t in stamps])
    assert [it.prompt_tokens for it in items] == [r["input_length"] for r in rows]
    assert [list(it.blocks) for it in items] == [r["hash_ids"] for r in rows]
    assert {it.block_tokens for it in items} == {512}
    retimed = build_workload(spec_for(path, 40, arrivals=ArrivalSpec("trace", 4.0)))
    assert retimed[-1].arrival_s == pytest.approx(39 / 4.0)  # re-timed as the CSV traces
    small = build_workload(spec_for(path, 40, block_tokens=32))
    assert small[0].prompt_tokens == 32 * (len(items[0].blocks) - 1) + -(
        -(items[0].prompt_tokens - 512 * (len(items[0].blocks) - 1)) * 32 // 512
    )


def test_long_prompts_are_clipped_to_the_context_and_counted(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 0, "input_length": 2000, "output_length": 100, "hash_ids": [1, 2, 3, 4]},
        {"timestamp": 5, "input_length": 900, "output_length": 100, "hash_ids": [1, 5]},
    ]
    path = write_trace(tmp_path / "m.jsonl", rows)
    items = build_workload(spec_for(path, 2, context_tokens=1124))
    assert [it.prompt_tokens for it in items] == [1024, 900]  # 1124 - 100 output tokens
    assert [it.clipped_tokens for it in items] == [976, 0]
    assert items[0].blocks == (1, 2)  # the blocks it still covers
    with pytest.raises(ValueError, match="no room"):
        build_workload(spec_for(path, 2, context_tokens=100))


def test_prefill_scaled_slo_per_request(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 0, "input_length": 300, "output_length": 1, "hash_ids": [1]},
        {"timestamp": 1, "input_length": 20000, "output_length": 1, "hash_ids": list(range(40))},
    ]
    path = write_trace(tmp_path / "m.jsonl", rows)
    rule = PrefillSlo(16.0, 1.0, 0.15, "a100-llama31-8b-128k", name="long")
    items = build_workload(spec_for(path, 2, slo_rule=rule))
    profile = load_profile("a100-llama31-8b-128k")
    assert items[0].slo_ttft_s == 1.0  # 16 x 24 ms is under the floor
    assert items[1].slo_ttft_s == pytest.approx(16 * profile.prefill_time(20000, 2048))
    assert {(it.slo_tbt_s, it.slo_class) for it in items} == {(0.15, "long")}


def run_sequentially(items: list[WorkItem], block_size: int) -> tuple[int, int]:
    """Each request alone on one engine with an unbounded cache: (hit tokens, queried)."""
    tok = Tokenizer()
    prompts = PromptIds(tok, seed=5)
    longest = max(it.prompt_tokens for it in items) + 8
    total_blocks = sum(it.prompt_tokens for it in items) // block_size + 2 * len(items) + 16
    config = EngineConfig(block_size=block_size, num_gpu_blocks=total_blocks, max_model_len=longest)
    engine = EngineModel(config, load_profile("a100-llama31-8b-128k"), seed=5, tokenizer=tok)
    t = 0.0
    for it in items:
        ids = prompts.for_item(it)
        assert len(ids) == it.prompt_tokens
        sampling = SamplingSpec(max_tokens=1, ignore_eos=True)
        engine.add_request(EngineRequest(f"r{it.index}", ids, sampling, t))
        while engine.has_work():
            t += engine.step(t).duration_s
    stats = engine.stats()
    return stats.prefix_cache_hits, stats.prefix_cache_queries


@pytest.mark.parametrize(("block_tokens", "engine_block"), [(512, 16), (512, 512), (48, 32)])
def test_engine_prefix_hits_equal_the_traces_repeated_blocks_exactly(
    tmp_path: Path, block_tokens: int, engine_block: int
) -> None:
    rows = make_rows(120)
    path = write_trace(tmp_path / "m.jsonl", rows)
    items = build_workload(spec_for(path, len(rows), block_tokens=block_tokens))
    hits, queries = run_sequentially(items, engine_block)
    expected = prefix_reuse(read_mooncake(path), block_tokens, engine_block)
    assert queries == expected.prompt_tokens
    assert hits == expected.reusable_tokens
    assert 0.3 < expected.share < 0.9  # the fixture shares a lot, and not everything


def test_unclipped_share_is_the_repeated_block_share_when_blocks_are_engine_blocks(
    tmp_path: Path,
) -> None:
    # Every prompt a whole number of blocks and never a repeated last block: then the engine
    # (one engine block per trace block) hits exactly the trace's repeated blocks.
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [0, 1]},
        {"timestamp": 1, "input_length": 1536, "output_length": 1, "hash_ids": [0, 1, 2]},
        {"timestamp": 2, "input_length": 1024, "output_length": 1, "hash_ids": [0, 3]},
        {"timestamp": 3, "input_length": 2048, "output_length": 1, "hash_ids": [0, 1, 2, 4]},
    ]
    path = write_trace(tmp_path / "m.jsonl", rows)
    items = build_workload(spec_for(path, 4))
    hits, queries = run_sequentially(items, 512)
    assert hits / queries == repeated_block_share(read_mooncake(path)) == 6 / 11


def test_lru_cache_bounds_the_reuse() -> None:
    rows = rows_of(
        (1024, [1, 2]),
        (1024, [3, 4]),
        (1024, [1, 2]),  # 4 blocks since its last use: gone from a 3-block cache
        (1024, [3, 4]),  # then [1, 2] evicted [3, 4] too
        (1024, [3, 4]),  # cached now
    )
    assert lru_prefix_reuse(rows, 3 * 512).reusable_tokens == 1024
    assert lru_prefix_reuse(rows, 4 * 512).reusable_tokens == 3 * 1024
    unbounded = lru_prefix_reuse(rows, 10**9)
    assert unbounded == prefix_reuse(rows)
