"""Property test: KV blocks are conserved under random add/abort/step sequences."""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ascendra_proxy.engine import EngineConfig, EngineModel, load_profile
from ascendra_proxy.engine.sequence import Status

from .conftest import request

PROFILE = load_profile("a100-llama3-8b")
SHARED = list(range(100, 260))  # a common prefix so that prefix-cache sharing happens

op = st.one_of(
    st.tuples(
        st.just("add"),
        st.integers(1, 150),  # prompt length
        st.integers(0, 160),  # shared-prefix length
        st.integers(1, 60),  # max_tokens
        st.integers(-2, 2),  # priority
    ),
    st.tuples(st.just("abort"), st.integers(0, 40)),
    st.tuples(st.just("step"), st.integers(1, 4)),
)


def check(engine: EngineModel) -> None:
    kv = engine.kv
    kv.check_invariants()
    holders: Counter[int] = Counter()
    for seq in engine.scheduler.running:
        assert seq.status is Status.RUNNING
        holders.update(seq.blocks)
        assert seq.num_computed <= len(seq.blocks) * kv.block_size
    used = kv.num_blocks - kv.num_free_blocks
    assert used == len(holders)
    assert all(kv._ref[b] == n for b, n in holders.items())
    stats = engine.stats()
    assert stats.num_running + stats.num_waiting == len(engine._seqs)


@given(
    ops=st.lists(op, max_size=60),
    policy=st.sampled_from(["fcfs", "priority"]),
    blocks=st.integers(16, 48),
    budget=st.sampled_from([16, 64, 512]),
    drain=st.booleans(),
)
@example(  # a running request preempts itself; the one behind it runs next step
    ops=[("add", 19, 15, 48, 0), ("step", 1), ("add", 1, 157, 38, -1)],
    policy="priority",
    blocks=18,
    budget=16,
    drain=True,
)
@settings(max_examples=150, deadline=None)
def test_blocks_are_conserved(
    ops: list[tuple[object, ...]], policy: str, blocks: int, budget: int, drain: bool
) -> None:
    config = EngineConfig(
        num_gpu_blocks=blocks,
        max_model_len=256,
        max_num_batched_tokens=budget,
        max_num_seqs=8,
        scheduling_policy=policy,  # type: ignore[arg-type]
    )
    engine = EngineModel(config, PROFILE, seed=1)
    added = 0
    for item in ops:
        if item[0] == "add":
            _, n, shared, max_tokens, prio = item
            assert isinstance(n, int) and isinstance(shared, int)
            assert isinstance(max_tokens, int) and isinstance(prio, int)
            prompt = (SHARED[:shared] + list(range(1000 + added, 1000 + added + n)))[:200]
            engine.add_request(request(f"r{added}", prompt, max_tokens, float(added), prio))
            added += 1
        elif item[0] == "abort":
            engine.abort(f"r{item[1]}")
        else:
            assert isinstance(item[1], int)
            for _ in range(item[1]):
                engine.step(0.0)
        check(engine)
    if drain:  # every request finishes; no two steps in a row without progress
        idle = False
        for _ in range(20_000):
            if not engine.has_work():
                break
            res = engine.step(0.0)
            if res.num_prefill_tokens + res.num_decode_seqs == 0:
                # vLLM's running loop stops at a request that had to preempt itself (the
                # rest runs next step): such a step only preempts, and costs nothing
                assert res.preempted and res.duration_s == 0.0 and not idle
                idle = True
            else:
                idle = False
            check(engine)
    for i in range(added):
        engine.abort(f"r{i}")
    check(engine)
    assert engine.num_free_blocks == blocks and not engine.has_work()
