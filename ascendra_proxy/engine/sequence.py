"""Per-request state inside the engine model.

Theory of operation: a :class:`Sequence` is the engine's mutable view of one request: its
token ids (prompt then generated), how many of them have KV computed, the KV blocks it holds,
the rolling hash of its tokens (which drives generation) and the hash at every full-block
boundary (which keys the prefix cache).  ``num_computed < len(tokens)`` means work is pending:
a prefill (possibly chunked, possibly a recompute after preemption) or, when exactly one token
is missing, a decode.  When a step computes the last pending token the model samples the next
token, so ``len(tokens) - num_computed`` is 1 for a request in the decode phase.
"""

from __future__ import annotations

from enum import IntEnum

from .types import EngineRequest


class Status(IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2
    ABORTED = 3


class Sequence:
    __slots__ = (
        "arrival",
        "blocks",
        "finish_ids",
        "hash",
        "hashes",
        "ignore_eos",
        "key_r",
        "key_w",
        "limit",
        "max_tokens",
        "min_tokens",
        "num_cached_tokens",
        "num_computed",
        "num_hashed_blocks",
        "num_output",
        "num_preemptions",
        "num_prompt",
        "order",
        "pending",
        "priority",
        "reported_first",
        "request_id",
        "scheduled_once",
        "status",
        "stop_ids",
        "tokens",
    )

    def __init__(
        self,
        req: EngineRequest,
        order: int,
        keys: tuple[int, int],
        max_model_len: int,
        eos_token_id: int,
        seq_hash: int,
        hashes: list[int],
        pending: bytes,
    ) -> None:
        s = req.sampling
        self.request_id = req.request_id
        self.priority = req.priority
        self.arrival = req.arrival_time
        self.order = order
        self.tokens: list[int] = list(req.prompt_token_ids)
        self.num_prompt = len(self.tokens)
        self.num_computed = 0
        self.blocks: list[int] = []
        self.num_hashed_blocks = 0  # leading blocks registered in (or hit from) the cache
        self.hash = seq_hash
        self.hashes = hashes
        self.pending = pending
        self.key_r, self.key_w = keys
        self.max_tokens = s.max_tokens
        self.min_tokens = s.min_tokens
        self.ignore_eos = s.ignore_eos
        self.stop_ids = frozenset(s.stop_token_ids)
        # Token ids that end the request (once min_tokens outputs exist).
        eos = () if s.ignore_eos else (eos_token_id,)
        self.finish_ids = self.stop_ids.union(eos)
        # Finish by length once len(tokens) reaches this.
        self.limit = min(self.num_prompt + s.max_tokens, max_model_len)
        self.num_output = 0
        self.status = Status.WAITING
        self.num_cached_tokens = -1  # set when first scheduled
        self.scheduled_once = False
        self.reported_first = False
        self.num_preemptions = 0

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, {self.status.name}, tokens={len(self.tokens)}, "
            f"computed={self.num_computed}, blocks={len(self.blocks)})"
        )
