"""Settings of one emulated server.

Theory of operation: :class:`EmulatorConfig` is a plain value built by the CLI or by tests.
Engine fields left at ``None`` take the latency profile's defaults (the batch limits the
profiled vLLM would use); :func:`engine_config` turns the config into the engine model's
:class:`EngineConfig`.  ``time_scale`` multiplies every modelled step duration before the
server sleeps it: 1.0 is real time, 0.01 runs 100x faster, 0 steps as fast as possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ascendra_proxy.emulator.faults import FaultConfig
from ascendra_proxy.engine.config import EngineConfig, SchedulingPolicy, config_for_profile
from ascendra_proxy.engine.profile import LatencyProfile, load_profile

Flavor = Literal["vllm", "sglang"]
VLLM_VERSION = "0.32.0"
SGLANG_VERSION = "0.5.4"


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    flavor: Flavor = "vllm"
    # A profile name (looked up like ``load_profile``), a YAML path, or a loaded profile.
    profile: str | Path | LatencyProfile = "a100-llama3-8b"
    model: str | None = None  # served model name; None: the profile's name
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    scheduling_policy: SchedulingPolicy = "fcfs"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    eos_rate: float | None = None  # None: the engine's default
    seed: int = 0
    time_scale: float = 1.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    # vLLM's --enable-prompt-tokens-details (cached tokens in usage); on by default here.
    prompt_tokens_details: bool = True
    # SGLang: delay between a client disconnect and the abort (SGLang's background abort task).
    sglang_abort_delay_s: float = 1.0
    # SGLang --schedule-low-priority-values-first (vLLM's convention); default: higher first.
    sglang_low_priority_values_first: bool = False

    def __post_init__(self) -> None:
        if self.flavor not in ("vllm", "sglang"):
            raise ValueError(f"unknown flavor {self.flavor!r} (vllm or sglang)")
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        if self.sglang_abort_delay_s < 0:
            raise ValueError("sglang_abort_delay_s must be >= 0")

    def load_profile(self) -> LatencyProfile:
        if isinstance(self.profile, LatencyProfile):
            return self.profile
        return load_profile(self.profile)

    def served_model(self, profile: LatencyProfile) -> str:
        return self.model or profile.name


def engine_config(cfg: EmulatorConfig, profile: LatencyProfile, eos_token_id: int) -> EngineConfig:
    """The engine model's settings: profile defaults, then every field the user set."""
    overrides: dict[str, Any] = {
        "scheduling_policy": cfg.scheduling_policy,
        "enable_prefix_caching": cfg.enable_prefix_caching,
    }
    optional = {
        "max_num_seqs": cfg.max_num_seqs,
        "max_num_batched_tokens": cfg.max_num_batched_tokens,
        "num_gpu_blocks": cfg.num_gpu_blocks,
        "block_size": cfg.block_size,
        "max_model_len": cfg.max_model_len,
        "eos_rate": cfg.eos_rate,
    }
    overrides.update({k: v for k, v in optional.items() if v is not None})
    return config_for_profile(profile, **overrides).resolve(profile, eos_token_id)
