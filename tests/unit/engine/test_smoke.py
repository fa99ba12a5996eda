from __future__ import annotations

from ascendra_proxy.engine import FinishReason, LatencyProfile, Tokenizer

from .conftest import make_engine, prompt_ids, request, run_to_completion


def test_requests_run_to_their_length(a100: LatencyProfile, tokenizer: Tokenizer) -> None:
    engine = make_engine(a100, tokenizer)
    for i in range(4):
        engine.add_request(request(f"r{i}", prompt_ids(tokenizer, 100 + 500 * i, i), max_tokens=20))
    tokens, results = run_to_completion(engine)
    assert {k: len(v) for k, v in tokens.items()} == {f"r{i}": 20 for i in range(4)}
    last = [o for r in results for o in r.outputs if o.finished]
    assert all(o.finish_reason is FinishReason.LENGTH for o in last)
    assert engine.num_free_blocks == engine.stats().num_total_blocks
