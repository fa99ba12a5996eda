"""Deterministic generation: seeds, continuations, EOS/min_tokens/stop ids, multi-byte pieces."""

from __future__ import annotations

import random
import statistics

import pytest

from ascendra_proxy.engine import (
    EngineConfig,
    EngineModel,
    FinishReason,
    IncrementalDetokenizer,
    LatencyProfile,
    StepResult,
    Tokenizer,
)
from ascendra_proxy.engine.generation import block_hashes, extend_hash, seed_keys

from .conftest import make_engine, prompt_ids, request, run_to_completion


def finish_of(results: list[StepResult], rid: str) -> tuple[FinishReason | None, int | None]:
    for res in results:
        for out in res.outputs:
            if out.request_id == rid and out.finished:
                return out.finish_reason, out.stop_token_id
    raise AssertionError(f"{rid} did not finish")


def workload(engine: EngineModel, tokenizer: Tokenizer, n: int = 6) -> None:
    for i in range(n):
        req = request(f"r{i}", prompt_ids(tokenizer, 30 + 17 * i, i), 80, ignore_eos=False)
        engine.add_request(req)


def test_same_seed_same_stream(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    streams = []
    for _ in range(2):
        engine = EngineModel(EngineConfig(), a100, seed=3, tokenizer=tokenizer)
        workload(engine, tokenizer)
        tokens, results = run_to_completion(engine)
        streams.append((tokens, [r.duration_s for r in results]))
    assert streams[0] == streams[1]


def test_seeds_change_the_stream(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    outs = []
    for seed in (3, 4):
        engine = EngineModel(EngineConfig(), a100, seed=seed, tokenizer=tokenizer)
        engine.add_request(request("r", prompt_ids(tokenizer, 30), 30))
        engine.add_request(request("s", prompt_ids(tokenizer, 30), 30, seed=11))
        outs.append(run_to_completion(engine)[0])
    assert outs[0]["r"] != outs[1]["r"]  # engine seed matters
    assert outs[0]["r"] != outs[0]["s"]  # request seed matters
    assert outs[0]["s"] != outs[1]["s"]


def test_output_does_not_depend_on_batch_company(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    alone = make_engine(a100, tokenizer)
    alone.add_request(request("r3", prompt_ids(tokenizer, 30 + 17 * 3, 3), 80, ignore_eos=False))
    crowded = make_engine(a100, tokenizer, max_num_batched_tokens=40)
    workload(crowded, tokenizer)
    assert run_to_completion(alone)[0]["r3"] == run_to_completion(crowded)[0]["r3"]


def test_continuation_from_a_prefix_reproduces_the_rest(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    """Cut each run at several points and continue it on another engine (same seed)."""
    cfg = {"eos_rate": 0.02}
    reasons = set()
    for rseed in range(6):
        prompt = prompt_ids(tokenizer, 45, rseed)
        orig = make_engine(a100, tokenizer, **cfg)
        orig.add_request(request("o", prompt, 60, ignore_eos=False, min_tokens=10, seed=rseed))
        tokens, results = run_to_completion(orig)
        full = tokens["o"]
        reasons.add(finish_of(results, "o")[0])
        other = make_engine(a100, tokenizer, **cfg)
        other.add_request(request("x", prompt_ids(tokenizer, 200, 99), 30, ignore_eos=False))
        cuts = sorted({0, 1, 5, len(full) // 2, len(full) - 1})
        for cut in cuts:
            rest = request(
                f"c{cut}",
                prompt + full[:cut],
                60 - cut,
                ignore_eos=False,
                min_tokens=max(0, 10 - cut),
                seed=rseed,
            )
            other.add_request(rest)
        tokens2, results2 = run_to_completion(other)
        for cut in cuts:
            assert tokens2[f"c{cut}"] == full[cut:], (rseed, cut)
            assert finish_of(results2, f"c{cut}") == finish_of(results, "o")
    assert reasons == {FinishReason.STOP, FinishReason.LENGTH}


def test_min_tokens_suppresses_eos_and_ignore_eos_never_stops(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, eos_rate=0.3)
    eos = tokenizer.eos_token_id
    for i in range(20):
        engine.add_request(
            request(f"m{i}", prompt_ids(tokenizer, 20, i), 100, ignore_eos=False, min_tokens=15)
        )
        engine.add_request(request(f"i{i}", prompt_ids(tokenizer, 20, i), 40, ignore_eos=True))
    tokens, results = run_to_completion(engine)
    for i in range(20):
        m = tokens[f"m{i}"]
        assert len(m) > 15 and eos not in m[:15]
        assert m[-1] == eos and finish_of(results, f"m{i}") == (FinishReason.STOP, None)
        assert len(tokens[f"i{i}"]) == 40 and eos not in tokens[f"i{i}"]


def test_stop_token_ids_end_the_request_after_min_tokens(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    prompt = prompt_ids(tokenizer, 20)
    engine = make_engine(a100, tokenizer)
    engine.add_request(request("free", prompt, 60))
    free = run_to_completion(engine)[0]["free"]
    stop = free[10]
    first = free.index(stop)
    engine.add_request(request("stopped", prompt, 60, stop_token_ids=(stop,)))
    tokens, results = run_to_completion(engine)
    assert tokens["stopped"] == free[: first + 1]
    assert finish_of(results, "stopped") == (FinishReason.STOP, stop)
    engine.add_request(request("late", prompt, 60, stop_token_ids=(stop,), min_tokens=first + 5))
    tokens, _ = run_to_completion(engine)
    late = tokens["late"]
    assert stop not in late[: first + 5]


def test_default_eos_rate_gives_about_200_tokens(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer, max_num_batched_tokens=8192)
    for i in range(300):
        engine.add_request(request(f"r{i}", prompt_ids(tokenizer, 8, i), 4000, ignore_eos=False))
    tokens, _ = run_to_completion(engine)
    mean = statistics.fmean(len(t) for t in tokens.values())
    assert 160 <= mean <= 240


def test_multibyte_characters_stream_as_byte_pieces(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer)
    engine.add_request(request("r", prompt_ids(tokenizer, 10), 3000))
    tokens = run_to_completion(engine)[0]["r"]
    byte_ids = [t for t in tokens if tokenizer.byte_base <= t < tokenizer.byte_base + 256]
    assert 30 <= len(byte_ids) <= 200  # ~1% of tokens start a character of 2-4 bytes
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push([t]) for t in tokens]
    assert pieces.count("") >= len(byte_ids) // 2
    text = detok.text
    assert "\ufffd" not in text
    assert any(ord(ch) > 0x7F for ch in text)
    assert text + detok.flush() == tokenizer.decode(tokens)


def test_prompt_ending_inside_a_character_is_completed(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    rocket = tokenizer.encode("🚀", add_special_tokens=False)
    engine = make_engine(a100, tokenizer)
    engine.add_request(request("r", prompt_ids(tokenizer, 10) + rocket[:2], 2))
    tokens = run_to_completion(engine)[0]["r"]
    assert all(tokenizer.byte_base + 0x80 <= t < tokenizer.byte_base + 0xC0 for t in tokens)
    whole = tokenizer.decode(rocket[:2] + tokens)
    assert len(whole) == 1 and "\ufffd" not in whole


def test_next_token_is_a_pure_function_of_the_sequence(
    a100: LatencyProfile, tokenizer: Tokenizer
) -> None:
    engine = make_engine(a100, tokenizer)
    prompt = prompt_ids(tokenizer, 25)
    engine.add_request(request("r", prompt, 300))
    generated = run_to_completion(engine)[0]["r"]
    keys = seed_keys(engine.seed, None)
    h = block_hashes(prompt, 16)[0]
    seq = list(prompt)
    for tok in generated:
        pending = engine.generator.pending_from_tail(seq)
        expect, _ = engine.generator.next_token(h, keys, pending, allow_eos=False)
        assert tok == expect
        seq.append(tok)
        h = extend_hash(h, tok)
    assert h == block_hashes(seq, 16)[0]


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_block_hashes_fold_blocks_like_extend_hash(block_size: int) -> None:
    rng = random.Random(block_size)
    for n in (0, 1, block_size - 1, block_size, 5 * block_size + 2, 300):
        ids = [rng.randrange(0, 1 << 17) for _ in range(n)]
        h, boundaries = 0, []
        for i, t in enumerate(ids, 1):
            h = extend_hash(h, t)
            if i % block_size == 0:
                boundaries.append(h)
        assert block_hashes(ids, block_size) == (h, boundaries)
