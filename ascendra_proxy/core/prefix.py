"""Where did we send which prompt prefix?  A bounded record for prefix-cache affinity.

Theory of operation.  Engines cache the KV of prompt prefixes in fixed blocks (vLLM: full
16-token blocks, keyed by a hash chained over all earlier blocks).  The proxy cannot see an
engine's cache, but it knows every prompt it sent where.  :func:`block_hashes` turns a token
id sequence into one chained hash per full block (hash ``i`` depends on blocks ``0..i``, so
equal hashes mean equal prefixes); the driver computes them once per request.
:class:`PrefixIndex` remembers, per backend, the most recently sent block hashes, up to a
fixed number of blocks per backend (least recently used first out, like the engines' own
eviction), and answers "how many leading blocks of this prompt did we send there?".  That
is an *expected* hit: the engine may have evicted earlier.  Only ints are hashed, so the
hashes are the same in every process (no string hash randomisation).

Because hash ``i`` stands for the whole prefix up to block ``i``, the index keeps only
*checkpoints*: every ``stride``-th block hash and the last one of each prompt.  A hit is the
longest recorded checkpoint, so it is exact to ``stride`` blocks (128 tokens with 16-token
blocks and the default stride 8), while recording and looking up cost ``1/stride`` of a
per-block record (this runs for every dispatch and every offload candidate).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["Checkpoints", "PrefixIndex", "block_hashes"]

_SEED = 0x5EED


def block_hashes(token_ids: Sequence[int], block_size: int) -> tuple[int, ...]:
    """One chained hash per full block of ``block_size`` tokens (a trailing partial block
    is not cacheable and gets none)."""
    out: list[int] = []
    prev = _SEED
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        prev = hash((prev, tuple(token_ids[start : start + block_size])))
        out.append(prev)
    return tuple(out)


Checkpoints = tuple[tuple[int, int], ...]  # (blocks covered, chained hash)


class PrefixIndex:
    """Per backend, an LRU set of prefix checkpoints the proxy sent there (bounded)."""

    def __init__(self, max_blocks_per_backend: int, stride: int = 8) -> None:
        if max_blocks_per_backend < 1 or stride < 1:
            raise ValueError("max_blocks_per_backend and stride must be >= 1")
        self._cap = max(1, max_blocks_per_backend // stride)
        self._stride = stride
        self._blocks: dict[str, OrderedDict[int, None]] = {}

    def checkpoints(self, hashes: Sequence[int]) -> Checkpoints:
        """A prompt's checkpoints: every stride-th block hash and the last one (compute once
        per prompt, then pass them to :meth:`record` and :meth:`hit_blocks`)."""
        n, k = len(hashes), self._stride
        points = [(i + 1, hashes[i]) for i in range(k - 1, n, k)]
        if n % k:
            points.append((n, hashes[-1]))
        return tuple(points)

    def record(self, backend: str, points: Checkpoints) -> None:
        """Remember that a prompt with these checkpoints was sent to ``backend``."""
        if not points:
            return
        lru = self._blocks.setdefault(backend, OrderedDict())
        for _, h in points:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
        while len(lru) > self._cap:
            lru.popitem(last=False)

    def hit_blocks(self, backend: str, points: Checkpoints) -> int:
        """Leading blocks covered by the longest of ``points`` recorded for ``backend``."""
        lru = self._blocks.get(backend)
        if not lru:
            return 0
        hit = 0
        for covered, h in points:
            if h not in lru:
                break
            hit = covered
        return hit

    def forget(self, backend: str) -> None:
        """Drop everything recorded for ``backend`` (it restarted or failed)."""
        self._blocks.pop(backend, None)

    def size(self, backend: str) -> int:
        """Checkpoints recorded for ``backend``."""
        lru = self._blocks.get(backend)
        return 0 if lru is None else len(lru)
