"""Batch formation: decode-first, chunked prefill, limits, queue order, preemption, abort."""

from __future__ import annotations

import pytest

from ascendra_proxy.engine import (
    EngineConfig,
    EngineModel,
    FinishReason,
    LatencyProfile,
    StepResult,
    Tokenizer,
)

from .conftest import make_engine, prompt_ids, request, run_to_completion


def first_token_order(results: list[StepResult]) -> list[str]:
    seen: list[str] = []
    for res in results:
        for out in res.outputs:
            if out.request_id not in seen:
                seen.append(out.request_id)
    return seen


def test_decodes_first_then_chunked_prefill_within_budget(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, max_num_batched_tokens=64)
    for i in range(3):
        engine.add_request(request(f"d{i}", prompt_ids(tokenizer, 10, i), max_tokens=50))
    first = engine.step(0.0)
    assert (first.num_prefill_tokens, first.num_decode_seqs, len(first.outputs)) == (30, 0, 3)
    engine.add_request(request("long", prompt_ids(tokenizer, 200, 9), max_tokens=5))
    chunks = []
    for _ in range(4):
        res = engine.step(0.0)
        assert res.num_decode_seqs == 3
        assert res.num_prefill_tokens + res.num_decode_seqs <= 64
        chunks.append(res.num_prefill_tokens)
        ids = [o.request_id for o in res.outputs]
        assert ids[:3] == ["d0", "d1", "d2"]
    assert chunks == [61, 61, 61, 17]
    assert [o.request_id for o in res.outputs] == ["d0", "d1", "d2", "long"]


def test_long_prompt_is_chunked_and_first_token_ends_the_prefill(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, max_num_batched_tokens=256)
    engine.add_request(request("r", prompt_ids(tokenizer, 1000), max_tokens=3))
    steps = [engine.step(0.0) for _ in range(4)]
    assert [s.num_prefill_tokens for s in steps] == [256, 256, 256, 232]
    assert [len(s.outputs) for s in steps] == [0, 0, 0, 1]
    assert steps[0].newly_scheduled == ("r",)
    assert all(s.newly_scheduled == () for s in steps[1:])
    out = steps[3].outputs[0]
    assert out.num_cached_tokens == 0 and len(out.new_token_ids) == 1
    # later chunks attend to the earlier ones: each chunk costs more than the one before
    assert steps[0].duration_s < steps[1].duration_s < steps[2].duration_s


def test_long_prefill_token_threshold_caps_each_request(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, long_prefill_token_threshold=100)
    engine.add_request(request("a", prompt_ids(tokenizer, 250, 1)))
    engine.add_request(request("b", prompt_ids(tokenizer, 250, 2)))
    assert engine.step(0.0).num_prefill_tokens == 200


def test_max_num_seqs_limits_the_running_set(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer, max_num_seqs=2)
    for i in range(5):
        engine.add_request(request(f"r{i}", prompt_ids(tokenizer, 20, i), max_tokens=4))
    res = engine.step(0.0)
    assert res.newly_scheduled == ("r0", "r1")
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (2, 3)
    tokens, results = run_to_completion(engine)
    assert all(r.num_decode_seqs + len(r.newly_scheduled) <= 2 for r in results)
    assert len(tokens) == 5


def _queue_order(a100: LatencyProfile, tokenizer: Tokenizer, policy: str) -> list[str]:
    engine = make_engine(a100, tokenizer, max_num_seqs=1, scheduling_policy=policy)
    specs = [("a", 0.0, 5), ("b", 1.0, 1), ("c", 2.0, 1), ("d", 3.0, -3)]
    for rid, arrival, prio in specs:
        req = request(rid, prompt_ids(tokenizer, 20), max_tokens=2, arrival=arrival, priority=prio)
        engine.add_request(req)
    _, results = run_to_completion(engine)
    return first_token_order(results)


def test_fcfs_serves_in_arrival_order(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    assert _queue_order(a100, tokenizer, "fcfs") == ["a", "b", "c", "d"]


def test_priority_serves_lower_value_first_ties_by_arrival(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    assert _queue_order(a100, tokenizer, "priority") == ["d", "b", "c", "a"]


def test_priority_arrival_does_not_evict_a_running_request(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, max_num_seqs=1, scheduling_policy="priority")
    engine.add_request(request("low", prompt_ids(tokenizer, 20), max_tokens=5, priority=9))
    engine.step(0.0)
    engine.add_request(request("high", prompt_ids(tokenizer, 20), max_tokens=5, priority=-9))
    _, results = run_to_completion(engine)
    low_done = next(i for i, r in enumerate(results) for o in r.outputs if o.finished)
    high_first = next(i for i, r in enumerate(results) for o in r.outputs if o.request_id == "high")
    assert low_done < high_first
    assert engine.stats().num_preemptions == 0


def _squeezed(a100: LatencyProfile, tokenizer: Tokenizer, policy: str) -> EngineModel:
    """Six 16-token blocks; three 30-token prompts fill them, the first decode block preempts."""
    engine = make_engine(
        a100, tokenizer, num_gpu_blocks=6, max_model_len=96, scheduling_policy=policy
    )
    for rid, prio in (("A", 0), ("B", 5), ("C", 1)):
        arrival = float(ord(rid))
        req = request(rid, prompt_ids(tokenizer, 30, ord(rid)), 20, arrival, prio)
        engine.add_request(req)
    return engine


def _first_preempted(engine: EngineModel) -> tuple[str, ...]:
    for _ in range(50):
        res = engine.step(0.0)
        if res.preempted:
            return res.preempted
    raise AssertionError("no preemption")


def test_fcfs_preempts_the_newest_running_request(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = _squeezed(a100, tokenizer, "fcfs")
    assert _first_preempted(engine) == ("C",)
    assert engine.stats().num_preemptions == 1
    assert engine.num_computed_tokens("C") == 0


def test_priority_preempts_the_largest_priority_value(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = _squeezed(a100, tokenizer, "priority")
    assert _first_preempted(engine) == ("B",)


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_preempted_requests_recompute_and_produce_the_same_tokens(
    a100: LatencyProfile, tokenizer: Tokenizer, policy: str
) -> None:
    squeezed = _squeezed(a100, tokenizer, policy)
    tokens, _ = run_to_completion(squeezed)
    assert squeezed.stats().num_preemptions >= 1
    roomy = make_engine(a100, tokenizer, scheduling_policy=policy)
    for rid, prio in (("A", 0), ("B", 5), ("C", 1)):
        roomy.add_request(request(rid, prompt_ids(tokenizer, 30, ord(rid)), 20, 0.0, prio))
    expected, _ = run_to_completion(roomy)
    assert tokens == expected
    assert squeezed.num_free_blocks == 6


def test_abort_frees_blocks_at_every_stage(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer, max_num_batched_tokens=256, max_num_seqs=2)
    total = engine.num_free_blocks
    assert engine.abort("nobody") is False
    engine.add_request(request("decoding", prompt_ids(tokenizer, 40, 2), max_tokens=50))
    engine.add_request(request("prefilling", prompt_ids(tokenizer, 1000, 1), max_tokens=50))
    engine.add_request(request("waiting", prompt_ids(tokenizer, 40, 3), max_tokens=50))
    engine.step(0.0)
    engine.step(0.0)  # "decoding" has produced a token, "prefilling" is mid-prompt
    assert engine.num_free_blocks < total
    assert engine.abort("waiting") and engine.abort("prefilling")
    res = engine.step(0.0)
    assert [o.request_id for o in res.outputs] == ["decoding"]
    assert res.num_prefill_tokens == 0
    assert engine.abort("decoding")
    assert engine.num_free_blocks == total and not engine.has_work()
    assert engine.abort("decoding") is False
    assert engine.step(0.0).outputs == ()


def test_abort_after_finish_is_false(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer)
    engine.add_request(request("r", prompt_ids(tokenizer, 10), max_tokens=1))
    (out,) = engine.step(0.0).outputs
    assert out.finish_reason is FinishReason.LENGTH
    assert engine.abort("r") is False


def test_max_model_len_ends_generation(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer, max_model_len=64)
    engine.add_request(request("r", prompt_ids(tokenizer, 60), max_tokens=100))
    tokens, results = run_to_completion(engine)
    assert len(tokens["r"]) == 4
    assert results[-1].outputs[-1].finish_reason is FinishReason.LENGTH


def test_invalid_requests_are_rejected(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer, max_model_len=64)
    engine.add_request(request("dup", [1, 2, 3]))
    with pytest.raises(ValueError, match="already exists"):
        engine.add_request(request("dup", [1, 2, 3]))
    with pytest.raises(ValueError, match="at least one token"):
        engine.add_request(request("empty", []))
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add_request(request("long", list(range(64))))
    with pytest.raises(ValueError, match="max_tokens"):
        engine.add_request(request("zero", [1, 2], max_tokens=0))
    with pytest.raises(ValueError, match="KV blocks"):
        make_engine(a100, tokenizer, num_gpu_blocks=3, max_model_len=64)


def test_stats_report_queue_and_kv_usage(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer, num_gpu_blocks=100, max_num_seqs=1, max_model_len=1024)
    engine.add_request(request("a", prompt_ids(tokenizer, 160, 1)))
    engine.add_request(request("b", prompt_ids(tokenizer, 160, 2)))
    engine.step(0.0)
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (1, 1)
    assert stats.kv_usage == pytest.approx(10 / 100)  # 160 computed tokens; 161st not yet
    assert (stats.num_total_blocks, stats.block_size) == (100, 16)
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (160, 1)


def test_jitter_is_seeded_multiplicative_noise(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    def durations(jitter: float, seed: int) -> list[float]:
        engine = EngineModel(EngineConfig(jitter=jitter), a100, seed=seed, tokenizer=tokenizer)
        engine.add_request(request("r", prompt_ids(tokenizer, 100), max_tokens=400))
        return [r.duration_s for r in run_to_completion(engine)[1]]

    plain = durations(0.0, 1)
    noisy = durations(0.2, 1)
    assert durations(0.2, 1) == noisy
    assert durations(0.2, 2) != noisy
    ratios = [n / p for n, p in zip(noisy, plain, strict=True)]
    assert len(set(ratios)) > 100
    assert 0.95 < sum(ratios) / len(ratios) < 1.05


def test_idle_step_and_prefix_cache_reset(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer)
    idle = engine.step(0.0)
    assert (idle.duration_s, idle.outputs) == (0.0, ())
    prompt = prompt_ids(tokenizer, 64)
    engine.add_request(request("a", prompt, max_tokens=1))
    run_to_completion(engine)
    assert engine.stats().extra["num_cached_blocks"] == 4
    assert engine.reset_prefix_cache()
    engine.add_request(request("b", prompt, max_tokens=1))
    _, steps = run_to_completion(engine)
    assert steps[0].outputs[0].num_cached_tokens == 0


def test_a_long_prefill_stretches_the_inter_token_time_of_running_decodes(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer)
    for i in range(32):
        engine.add_request(request(f"d{i}", prompt_ids(tokenizer, 200, i), max_tokens=100))
    while engine.step(0.0).num_prefill_tokens:
        pass  # 6400 prompt tokens take four steps
    calm = [engine.step(0.0).duration_s for _ in range(5)]
    engine.add_request(request("big", prompt_ids(tokenizer, 6000, 99), max_tokens=5))
    busy = [engine.step(0.0) for _ in range(3)]
    assert [(r.num_decode_seqs, len(r.outputs)) for r in busy] == [(32, 32), (32, 32), (32, 33)]
    assert [r.num_prefill_tokens for r in busy] == [2016, 2016, 1968]
    assert min(r.duration_s for r in busy) > 5 * max(calm)
