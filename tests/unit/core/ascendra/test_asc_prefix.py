"""Block hashes of prompts and the bounded per-backend prefix record."""

from __future__ import annotations

import pytest

from ascendra_proxy.core.prefix import PrefixIndex, block_hashes


def test_block_hashes_cover_full_blocks_only_and_chain() -> None:
    a = block_hashes(list(range(40)), 16)
    assert len(a) == 2  # the trailing 8 tokens are no block
    b = block_hashes([*range(32), 999], 16)
    assert b == a  # same two full blocks
    c = block_hashes([0, *range(1, 40)][:16] + [7] * 16, 16)
    assert c[0] == a[0] and c[1] != a[1]  # diverges from the second block on
    d = block_hashes([1, *range(1, 32)], 16)
    assert d[0] != a[0] and d[1] != a[1]  # chained: an early change changes every later hash
    assert block_hashes([1, 2, 3], 16) == ()


def test_hashes_are_stable_across_calls() -> None:
    assert block_hashes(list(range(64)), 16) == block_hashes(list(range(64)), 16)


def exact() -> PrefixIndex:
    return PrefixIndex(100, stride=1)  # a checkpoint at every block


def test_hit_counts_the_leading_recorded_blocks() -> None:
    idx = exact()
    h = block_hashes(list(range(64)), 16)  # 4 blocks
    idx.record("hp0", idx.checkpoints(h[:2]))
    assert idx.hit_blocks("hp0", idx.checkpoints(h)) == 2
    assert idx.hit_blocks("hp1", idx.checkpoints(h)) == 0
    other = block_hashes([5, *range(1, 64)], 16)
    assert idx.hit_blocks("hp0", idx.checkpoints(other)) == 0


def test_checkpoints_every_stride_blocks_and_the_last() -> None:
    idx = PrefixIndex(100, stride=4)
    h = block_hashes(list(range(16 * 10)), 16)  # 10 blocks
    assert [c for c, _ in idx.checkpoints(h)] == [4, 8, 10]
    assert [c for c, _ in idx.checkpoints(h[:8])] == [4, 8]
    assert idx.checkpoints(()) == ()
    idx.record("b", idx.checkpoints(h[:6]))  # a 6-block prompt went there
    # a longer prompt sharing those 6 blocks: hit known to the stride (4), not 6
    assert idx.hit_blocks("b", idx.checkpoints(h)) == 4
    idx.record("b", idx.checkpoints(h))
    assert idx.hit_blocks("b", idx.checkpoints(h)) == 10


def test_the_record_is_bounded_lru() -> None:
    idx = PrefixIndex(3, stride=1)
    idx.record("b", ((1, 11), (2, 12), (3, 13)))
    idx.record("b", ((1, 11),))  # touch 11: now 12 is the oldest
    idx.record("b", ((1, 14),))
    assert idx.size("b") == 3
    assert idx.hit_blocks("b", ((1, 11),)) == 1
    assert idx.hit_blocks("b", ((1, 12),)) == 0
    idx.forget("b")
    assert idx.size("b") == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PrefixIndex(0)
    with pytest.raises(ValueError):
        PrefixIndex(10, stride=0)
