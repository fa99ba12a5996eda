"""One simulated request: its core state, its client-side record, and its current attempt.

Theory of operation: a :class:`Flight` is the simulator's counterpart of the live proxy's
``proxy/flight.py`` Flight.  Its core ``RequestState`` is the policy-visible record (with
the prompt's block hashes, which the Ascendra policy reads for prefix affinity); its
``record`` is what the client measures (a loadgen :class:`~loadgen.metrics.RequestRecord`,
times shifted by the client hop); its ``prompt_ids`` and ``generated`` token ids make a
token-exact continuation possible (prompt + generated, with the remaining ``max_tokens``).
An :class:`Attempt` is one try on one engine; once closed, whatever it still produces is
dropped.

:class:`PromptIds` makes the prompt token ids, deterministic for a seed and a workload:
drawn from the engine tokenizer's word vocabulary after a BOS (one seeded stream, in
arrival order), the first ``prefix_tokens`` shared by every request of a prefix group.  A
request replayed from a block trace (Mooncake) is its blocks' token ids instead, no BOS
(:class:`loadgen.blocks.BlockTokens` over the same word ids), so requests share exactly the
blocks the trace says they share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ascendra_proxy.core.request import RequestState
from ascendra_proxy.engine import EngineRequest, Tokenizer
from ascendra_proxy.sim.backend import SimBackend
from loadgen.blocks import BlockTokens
from loadgen.metrics import RequestRecord
from loadgen.workloads import WorkItem, rng_for

__all__ = ["Attempt", "Flight", "PromptIds"]


@dataclass(slots=True)
class Attempt:
    engine_id: str
    backend: SimBackend
    request: EngineRequest
    queued_tokens: int  # prompt tokens counted as queued on the backend until a first token
    open: bool = True
    closed_by: str = ""  # why the proxy closed it: offload, migration, disconnect, drop, ...


@dataclass(slots=True)
class Flight:
    state: RequestState
    item: WorkItem
    record: RequestRecord
    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    attempt: Attempt | None = None
    attempts: int = 0
    warms: int = 0
    exclude: set[str] = field(default_factory=set)
    route: list[str] = field(default_factory=list)  # backends in dispatch order
    events: list[dict[str, Any]] = field(default_factory=list)
    held: bool = False
    # Whether a started stream can continue token-exactly elsewhere.  Simulated requests
    # always can (no stop strings, one choice); False models one the live proxy could
    # not resume exactly, so that the driver contract refuses to migrate it.
    exact_continuation: bool = True

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def remaining(self) -> int:
        return self.item.output_tokens - len(self.generated)


class PromptIds:
    """Deterministic prompt token ids per work item (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer, seed: int) -> None:
        vocab = tokenizer.generation_vocab()
        self._words = np.asarray(vocab.word_ids, dtype=np.int64)
        self._bos = tokenizer.bos_token_id
        # One stream, drawn in arrival order (seeding a generator per request costs more
        # than drawing its prompt); shared prefixes come from their own streams.
        self._rng = rng_for(seed, "prompt-ids")
        self._seed = seed
        self._prefixes: dict[int, list[int]] = {}
        self._blocks: BlockTokens | None = None

    def _draw(self, rng: np.random.Generator, n: int) -> list[int]:
        out: list[int] = self._words[rng.integers(len(self._words), size=max(n, 0))].tolist()
        return out

    def for_item(self, item: WorkItem) -> list[int]:
        if item.blocks:
            return self._from_blocks(item)
        head: list[int] = [self._bos]
        shared = item.prefix_tokens if item.prefix_group is not None else 0
        if shared:
            group = item.prefix_group
            assert group is not None
            if group not in self._prefixes:
                rng = rng_for(self._seed, f"prefix-{group}")
                self._prefixes[group] = self._draw(rng, shared - 1)
            head += self._prefixes[group]
        return head + self._draw(self._rng, item.prompt_tokens - len(head))

    def _from_blocks(self, item: WorkItem) -> list[int]:
        blocks = self._blocks
        if blocks is None or blocks.block_tokens != item.block_tokens:
            blocks = BlockTokens(self._words.tolist(), self._seed, item.block_tokens)
            self._blocks = blocks
        return blocks.prompt(item.blocks, item.prompt_tokens)
