"""Token ids for prompts built from trace blocks (the Mooncake replay).

Theory of operation: a trace names each prompt block by a hash id.  :class:`BlockTokens`
maps a hash id to a fixed run of ``block_tokens`` token ids drawn from ``vocab`` by a
generator seeded with ``(seed, hash id)``, so the same id always gives the same tokens, in
every process and in every run with that seed; a prompt is its blocks' tokens concatenated,
cut to the prompt's length (the last block is partial).  No BOS is added: engines take a
token-id prompt as given, so two prompts share exactly their common blocks' tokens.

The simulator draws from the engine tokenizer's word ids; the live load generator from the
ids of words that are one token for the target's tokenizer (learnt through its
``/tokenize``), so the ids are ordinary text tokens of that model, never special tokens.
Blocks are cached (least recently used out) because consecutive requests share them.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = ["BlockTokens"]

_ASPECT = zlib.crc32(b"trace-block")


class BlockTokens:
    """Deterministic token ids per hash id (see the module docstring)."""

    def __init__(
        self, vocab: Sequence[int], seed: int, block_tokens: int, cache_blocks: int = 4096
    ) -> None:
        if not vocab:
            raise ValueError("a block vocabulary needs at least one token id")
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
        self._vocab = np.asarray(vocab, dtype=np.int64)
        self._seed = seed
        self.block_tokens = block_tokens
        self._cache: OrderedDict[int, list[int]] = OrderedDict()
        self._cap = cache_blocks

    def block(self, hash_id: int) -> list[int]:
        cached = self._cache.get(hash_id)
        if cached is not None:
            self._cache.move_to_end(hash_id)
            return cached
        rng = np.random.default_rng([self._seed, _ASPECT, hash_id])
        picks = rng.integers(len(self._vocab), size=self.block_tokens)
        ids: list[int] = self._vocab[picks].tolist()
        self._cache[hash_id] = ids
        if len(self._cache) > self._cap:
            self._cache.popitem(last=False)
        return ids

    def prompt(self, hash_ids: Sequence[int], num_tokens: int) -> list[int]:
        """The first ``num_tokens`` token ids of the blocks ``hash_ids``."""
        out: list[int] = []
        for h in hash_ids:
            if len(out) >= num_tokens:
                break
            out += self.block(h)
        if len(out) < num_tokens:
            raise ValueError(
                f"{len(hash_ids)} blocks of {self.block_tokens} tokens cannot make "
                f"a {num_tokens}-token prompt"
            )
        del out[num_tokens:]
        return out
