"""Values exchanged with the step-level engine model.

Theory of operation: an engine holds requests; each call to ``EngineModel.step(now)`` forms
one batch the way vLLM v1's scheduler does, advances every scheduled request, and returns the
batch's modelled duration together with the tokens it produced.  The caller owns the clock:
the emulator sleeps ``duration_s`` (scaled) and then delivers the outputs; the simulator
schedules an event at ``now + duration_s``.  Outputs of a request aborted while its step was
"running" are dropped by the caller; the engine frees that request's blocks at the next step.

Nothing here reads a clock, touches asyncio, or draws from a global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FinishReason(StrEnum):
    STOP = "stop"  # EOS or a stop token id
    LENGTH = "length"  # max_tokens reached
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """What the engine needs to know about how a request generates."""

    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    # Extra seed mixed into generation; None means the engine's own seed only.
    seed: int | None = None


@dataclass(slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingSpec
    arrival_time: float
    # vLLM semantics inside the engine: lower value runs first, ties by arrival.
    # (The SGLang flavour of the emulator maps its own convention onto this.)
    priority: int = 0


@dataclass(slots=True)
class TokenOutput:
    """New tokens of one request from one step.

    A request whose prompt is still prefilling gets no TokenOutput in that step.  Treat as
    immutable; not frozen only because a frozen dataclass costs 3x more to construct and the
    engine makes one per running request per step.
    """

    request_id: str
    new_token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    # Matched stop token id (None for EOS or length), like vLLM's ``stop_reason``.
    stop_token_id: int | None = None
    # Prompt tokens served from the prefix cache; set on the request's first token output.
    num_cached_tokens: int | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class StepResult:
    duration_s: float
    outputs: tuple[TokenOutput, ...]
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    preempted: tuple[str, ...] = ()
    # Requests scheduled for the first time in this step (end of their queueing time).
    newly_scheduled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Gauges and counters, named after what vLLM exports."""

    num_running: int
    num_waiting: int
    kv_usage: float  # 0..1, share of KV blocks in use
    num_total_blocks: int
    block_size: int
    prefix_cache_queries: int  # prompt tokens looked up (counter)
    prefix_cache_hits: int  # prompt tokens found (counter)
    num_preemptions: int  # counter
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    extra: dict[str, float] = field(default_factory=dict)
