"""Automatic prefix caching: hits on full blocks, continuations, LRU eviction, counters."""

from __future__ import annotations

from ascendra_proxy.engine import LatencyProfile, Tokenizer

from .conftest import make_engine, prompt_ids, request, run_to_completion


def first_output_cached(engine_steps: list, rid: str) -> int | None:  # type: ignore[type-arg]
    for res in engine_steps:
        for out in res.outputs:
            if out.request_id == rid:
                return out.num_cached_tokens  # type: ignore[no-any-return]
    return None


def test_repeated_prompt_hits_its_full_blocks(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer)
    prompt = prompt_ids(tokenizer, 100)
    engine.add_request(request("first", prompt, max_tokens=2))
    _, first = run_to_completion(engine)
    engine.add_request(request("again", prompt, max_tokens=2))
    _, again = run_to_completion(engine)
    assert first_output_cached(first, "first") == 0
    assert first_output_cached(again, "again") == 96  # 6 full blocks of 16
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (200, 96)
    assert again[0].num_prefill_tokens == 4


def test_fully_cached_prompt_still_computes_its_last_token(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer)
    prompt = prompt_ids(tokenizer, 64)  # exactly 4 blocks
    engine.add_request(request("a", prompt, max_tokens=1))
    run_to_completion(engine)
    engine.add_request(request("b", prompt, max_tokens=1))
    _, steps = run_to_completion(engine)
    assert first_output_cached(steps, "b") == 48  # at most len - 1 tokens can hit
    assert steps[0].num_prefill_tokens == 16


def test_token_continuation_hits_prompt_and_generated_blocks(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer)
    prompt = prompt_ids(tokenizer, 50)
    engine.add_request(request("orig", prompt, max_tokens=40))
    tokens, _ = run_to_completion(engine)
    generated = tokens["orig"]
    # 89 tokens computed (the 90th was sampled only): 5 full blocks are cached
    engine.add_request(request("cont", prompt + generated, max_tokens=5))
    _, steps = run_to_completion(engine)
    assert first_output_cached(steps, "cont") == 80


def test_concurrent_identical_prompts_share_blocks(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, max_num_batched_tokens=64)
    prompt = prompt_ids(tokenizer, 64)
    engine.add_request(request("a", prompt, max_tokens=30))
    engine.step(0.0)
    used_by_one = engine.stats().num_total_blocks - engine.num_free_blocks
    engine.add_request(request("b", prompt, max_tokens=30))
    engine.step(0.0)
    used_by_two = engine.stats().num_total_blocks - engine.num_free_blocks
    assert used_by_one == 4
    assert used_by_two == 4 + 1 + 1  # 3 shared blocks, b's own 4th block, a's 5th block
    engine.abort("a")
    assert engine.stats().num_total_blocks - engine.num_free_blocks == 4  # b keeps the shared ones


def test_lru_eviction_takes_least_recently_freed_and_tail_blocks_first(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, num_gpu_blocks=8, max_model_len=128)
    a_prompt = prompt_ids(tokenizer, 65, 1)  # 4 full blocks + 1 token
    engine.add_request(request("a", a_prompt, max_tokens=1))
    run_to_completion(engine)
    # free queue now: 3 never-used blocks, then a's 5 blocks tail first
    engine.add_request(request("x", prompt_ids(tokenizer, 95, 2), max_tokens=1))  # 6 blocks
    run_to_completion(engine)
    engine.add_request(request("a2", a_prompt, max_tokens=1))
    _, steps = run_to_completion(engine)
    # x took the 3 unused blocks and a's last 3: a's first two blocks survive
    assert first_output_cached(steps, "a2") == 32


def test_more_recently_used_prefix_survives_eviction(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, num_gpu_blocks=8, max_model_len=128)
    old, new = prompt_ids(tokenizer, 49, 1), prompt_ids(tokenizer, 49, 2)  # 3 full blocks each
    for rid, p in (("old", old), ("new", new)):
        engine.add_request(request(rid, p, max_tokens=1))
        run_to_completion(engine)
    engine.add_request(request("filler", prompt_ids(tokenizer, 64, 3), max_tokens=1))
    run_to_completion(engine)
    engine.add_request(request("new2", new, max_tokens=1))
    _, steps = run_to_completion(engine)
    assert first_output_cached(steps, "new2") == 48
    engine.add_request(request("old2", old, max_tokens=1))
    _, steps = run_to_completion(engine)
    assert first_output_cached(steps, "old2") == 0


def test_disabled_prefix_caching_never_hits(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer, enable_prefix_caching=False)
    prompt = prompt_ids(tokenizer, 100)
    for rid in ("a", "b"):
        engine.add_request(request(rid, prompt, max_tokens=1))
        _, steps = run_to_completion(engine)
        assert first_output_cached(steps, rid) == 0
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (0, 0)


def test_resumed_requests_hit_their_own_blocks_and_count_separately(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, num_gpu_blocks=8, max_model_len=128)
    for rid in ("a", "b"):
        engine.add_request(request(rid, prompt_ids(tokenizer, 40, ord(rid)), 40))
    run_to_completion(engine)
    stats = engine.stats()
    assert stats.num_preemptions >= 1
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (80, 0)
    assert stats.extra["prefix_cache_preempted_queries"] > 0
    assert stats.extra["prefix_cache_preempted_hits"] > 0
