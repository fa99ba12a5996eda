"""Paged KV cache with automatic prefix caching (vLLM v1 block manager semantics).

Theory of operation: the cache has ``num_blocks`` blocks of ``block_size`` tokens.  Each block
has a reference count and, once it holds a full block of computed tokens, a hash: the rolling
hash of the whole token prefix up to the end of the block (so equal hashes mean equal
prefixes, i.e. a chained block hash).  ``_by_hash`` maps hashes to blocks.

Free blocks (reference count 0) sit in one LRU queue, whether or not they carry a hash.
Allocation takes blocks from the front of the queue and, if the block taken carries a hash,
evicts it from ``_by_hash``.  A request's blocks are released tail first, so the end of a
prompt is evicted before its (more shareable) beginning.  A prefix lookup walks a request's
block hashes until the first miss; hit blocks are shared (reference count +1) and leave the
free queue if they were in it.  Like vLLM, at most ``num_tokens - 1`` tokens can hit (the last
token must be computed to produce logits).  Counters are in tokens: ``queries`` grows by the
request's token count and ``hits`` by the cached tokens, once per successful admission; as in
recent vLLM, lookups by requests resuming after preemption are counted separately
(``preempted_queries`` / ``preempted_hits``).  (vLLM counts a lookup each time it examines a
waiting request, even when the allocation then fails; we count admitted requests only.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq

from .sequence import Sequence


class KVCache:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref = [0] * num_blocks
        self._hash = [-1] * num_blocks
        self._by_hash: dict[int, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.queries = 0
        self.hits = 0
        self.preempted_queries = 0  # lookups by requests resuming after preemption
        self.preempted_hits = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks currently findable by hash (in use or free)."""
        return len(self._by_hash)

    def usage(self) -> float:
        return (self.num_blocks - len(self._free)) / self.num_blocks

    # ----------------------------------------------------------------- lookups
    def lookup(self, hashes: Seq[int], num_tokens: int) -> list[int]:
        """Cached blocks for the longest prefix of ``hashes`` (at most num_tokens - 1 tokens)."""
        if not self.enable_prefix_caching:
            return []
        limit = min((num_tokens - 1) // self.block_size, len(hashes))
        by_hash = self._by_hash
        hit: list[int] = []
        for i in range(limit):
            b = by_hash.get(hashes[i])
            if b is None:
                break
            hit.append(b)
        return hit

    # -------------------------------------------------------------- allocation
    def admit(self, seq: Sequence, hit: list[int], num_new_tokens: int) -> bool:
        """Give a sequence with no blocks its prefix hits plus room for ``num_new_tokens``."""
        bs = self.block_size
        total = len(hit) * bs + num_new_tokens
        need = -(-total // bs) - len(hit)
        ref = self._ref
        touched = sum(1 for b in hit if ref[b] == 0)
        if need + touched > len(self._free):
            return False
        free = self._free
        for b in hit:
            if ref[b] == 0:
                del free[b]
            ref[b] += 1
        num_hit = len(hit)
        seq.blocks = list(hit)
        seq.num_hashed_blocks = num_hit
        seq.num_computed = num_hit * bs
        self._take(seq.blocks, need)
        if self.enable_prefix_caching:
            self._count_lookup(seq, num_hit * bs)
        return True

    def _count_lookup(self, seq: Sequence, hit_tokens: int) -> None:
        if seq.num_preemptions == 0:
            self.queries += len(seq.tokens)
            self.hits += hit_tokens
        else:
            self.preempted_queries += len(seq.tokens)
            self.preempted_hits += hit_tokens

    def grow(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` more computed tokens; False if out of blocks."""
        need = -(-(seq.num_computed + num_new_tokens) // self.block_size) - len(seq.blocks)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        self._take(seq.blocks, need)
        return True

    def _take(self, out: list[int], n: int) -> None:
        free = self._free
        ref = self._ref
        block_hash = self._hash
        for _ in range(n):
            b, _none = free.popitem(last=False)
            h = block_hash[b]
            if h >= 0:
                if self._by_hash.get(h) == b:
                    del self._by_hash[h]
                block_hash[b] = -1
            ref[b] = 1
            out.append(b)

    def release(self, seq: Sequence) -> None:
        """Drop the sequence's references; blocks at zero join the free queue tail first."""
        ref = self._ref
        free = self._free
        for b in reversed(seq.blocks):
            ref[b] -= 1
            if ref[b] == 0:
                free[b] = None
        seq.blocks = []
        seq.num_hashed_blocks = 0

    def register_full_blocks(self, seq: Sequence) -> None:
        """Publish the sequence's newly completed full blocks in the prefix cache."""
        full = min(seq.num_computed // self.block_size, len(seq.hashes))
        if not self.enable_prefix_caching:
            seq.num_hashed_blocks = full
            return
        by_hash = self._by_hash
        block_hash = self._hash
        for i in range(seq.num_hashed_blocks, full):
            b = seq.blocks[i]
            h = seq.hashes[i]
            if block_hash[b] < 0 and h not in by_hash:
                by_hash[h] = b
                block_hash[b] = h
        seq.num_hashed_blocks = full

    def reset_prefix_cache(self) -> bool:
        """Forget every hash (vLLM's /reset_prefix_cache); False if blocks are in use."""
        if len(self._free) != self.num_blocks:
            return False
        self._by_hash.clear()
        self._hash = [-1] * self.num_blocks
        return True

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (for tests)."""
        free = self._free
        assert all(self._ref[b] == 0 for b in free)
        in_use = sum(1 for r in self._ref if r > 0)
        assert in_use + len(free) == self.num_blocks
        for h, b in self._by_hash.items():
            assert self._hash[b] == h
