"""Engine settings (the subset of vLLM's engine arguments the step model honours).

Theory of operation: :class:`EngineConfig` is a plain validated value.  Fields left at ``None``
are resolved against the latency profile by :meth:`EngineConfig.resolve` (KV blocks from the
profile's capacity, EOS id from the tokenizer); :func:`config_for_profile` starts from the
batch defaults the profiled server would use (e.g. 8192/1024 on H100, block 32 on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from .profile import LatencyProfile

SchedulingPolicy = Literal["fcfs", "priority"]

# vLLM's output lengths look natural with a geometric tail; mean 1/eos_rate tokens.
DEFAULT_EOS_RATE = 1.0 / 200.0


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    num_gpu_blocks: int | None = None  # None: profile KV capacity / block_size
    scheduling_policy: SchedulingPolicy = "fcfs"
    enable_prefix_caching: bool = True
    max_model_len: int = 8192
    long_prefill_token_threshold: int = 0  # 0 = off; else cap per request per step
    eos_token_id: int | None = None  # None: the tokenizer's EOS
    eos_rate: float = DEFAULT_EOS_RATE  # P(EOS) per generated token when not ignore_eos
    jitter: float = 0.0  # 0 = off; sigma of seeded log-normal noise on step time

    def __post_init__(self) -> None:
        positive = ("max_num_seqs", "max_num_batched_tokens", "block_size", "max_model_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.num_gpu_blocks is not None and self.num_gpu_blocks <= 0:
            raise ValueError("num_gpu_blocks must be > 0")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"unknown scheduling_policy {self.scheduling_policy!r}")
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0")
        if not 0.0 <= self.eos_rate < 1.0:
            raise ValueError("eos_rate must be in [0, 1)")
        if self.jitter < 0.0:
            raise ValueError("jitter must be >= 0")

    def resolve(self, profile: LatencyProfile, eos_token_id: int) -> EngineConfig:
        """A copy with every ``None`` field filled in."""
        blocks = self.num_gpu_blocks
        if blocks is None:
            blocks = profile.num_blocks(self.block_size)
        eos = self.eos_token_id if self.eos_token_id is not None else eos_token_id
        return replace(self, num_gpu_blocks=blocks, eos_token_id=eos)


def config_for_profile(profile: LatencyProfile, **overrides: Any) -> EngineConfig:
    """An :class:`EngineConfig` with the profile's batch defaults, then ``overrides``."""
    d = profile.defaults
    base: dict[str, Any] = {
        "max_num_seqs": d.max_num_seqs,
        "max_num_batched_tokens": d.max_num_batched_tokens,
        "block_size": d.block_size,
    }
    base.update(overrides)
    return EngineConfig(**base)
