"""What the demo runs: its options, their defaults, and the workload they define.

Theory of operation: every number the demo uses is in :class:`DemoSettings`, which the
report prints and the JSON files record.  Rates and SLOs are given in *model time*, the time
of the emulated A100s (the unit of the paper and of ``ascendra-proxy simulate``).  With
``time_scale`` s every modelled GPU step takes s times longer in wall-clock time, so the
demo sends ``rate / s`` requests per wall-clock second and gives the proxy and the client
SLOs of ``s x`` the model-time SLOs: the engines see the same batches, the policies the same
slack, and the comparison is unchanged, at 1/s of the CPU cost per wall-clock second.

Default operating point (``ascendra-proxy simulate --config configs/paper-3xa100.yaml
--workload azure-conv --num-requests 300 --slo-ttft 1.0 --slo-tbt 0.15``): round-robin over
the three A100s keeps >= 90% attainment to ~30 req/s and falls to 61-67% at 36 req/s (seeds
0 and 1), where ``ascendra`` (2 LP + 1 HP, no mid-stream migration) still holds 75-82%.
The demo runs at 36 req/s: ~7,500 tokens/s of model time.  The whole demo costs about
100 us of CPU per token, so the automatic time scale (3 on an idle 2-core machine, up to 6
on a busy one; see :func:`ascendra_proxy.demo.cpu.pick_time_scale`) keeps it within a
quarter of the idle CPU.  A 300-request run takes ~20 s of model time per policy: the whole
demo lasts ~2.5 minutes at scale 3, ~4.5 at scale 6.
The smoke run (``--quick``) runs 40 requests with outputs capped at 200 tokens at time
scale 1: it checks the plumbing, not the policies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.arrivals import ArrivalSpec
from loadgen.workloads import SloClass, WorkItem, WorkloadSpec, build_workload

__all__ = ["QUICK", "Defaults", "DemoSettings"]

# A prompt plus its output must fit the engines' context (max_model_len 8192); the workload's
# outputs are at most 1000 tokens, so prompts are clipped at 7192 (fewer than 0.5% are).
MAX_MODEL_LEN = 8192
MAX_OUTPUT_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Defaults:
    rate: float
    num_requests: int
    time_scale: float | None  # None: chosen from the idle CPU (cpu.pick_time_scale)
    max_output_tokens: int


FULL = Defaults(rate=36.0, num_requests=300, time_scale=None, max_output_tokens=MAX_OUTPUT_TOKENS)
# The smoke run caps outputs: a run lasts as long as its longest stream.
QUICK = Defaults(rate=36.0, num_requests=40, time_scale=1.0, max_output_tokens=200)


@dataclass(frozen=True, slots=True)
class DemoSettings:
    policies: tuple[str, ...]
    rate: float  # model-time requests per second
    num_requests: int
    seed: int
    time_scale: float
    out: Path
    quick: bool = False
    max_output_tokens: int = MAX_OUTPUT_TOKENS
    scale_note: str = ""  # how the time scale was chosen
    workload: str = "azure-conv"
    profile: str = "a100-llama3-8b"
    slo_ttft_s: float = 1.0  # model time
    slo_tbt_s: float = 0.15

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("--policies: give at least one policy")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"--policies: a policy is listed twice: {','.join(self.policies)}")
        if self.rate <= 0 or self.num_requests < 1 or self.time_scale <= 0:
            raise ValueError("--rate, --num-requests and --time-scale must be positive")
        if not 1 <= self.max_output_tokens <= MAX_OUTPUT_TOKENS:
            raise ValueError(f"output cap must be in 1..{MAX_OUTPUT_TOKENS}")

    @property
    def wall_rate(self) -> float:
        return self.rate / self.time_scale

    @property
    def wall_slo(self) -> tuple[float, float]:
        return self.slo_ttft_s * self.time_scale, self.slo_tbt_s * self.time_scale

    def workload_spec(self) -> WorkloadSpec:
        """The wall-clock workload: model-time rate and SLOs converted by the time scale."""
        ttft, tbt = self.wall_slo
        return WorkloadSpec(
            num_requests=self.num_requests,
            arrivals=ArrivalSpec("poisson", self.wall_rate),
            slo_classes=(SloClass(ttft, tbt),),
            workload=self.workload,
            seed=self.seed,
            max_prompt_tokens=MAX_MODEL_LEN - MAX_OUTPUT_TOKENS,
            max_output_tokens=self.max_output_tokens,
        )

    def work_items(self) -> list[WorkItem]:
        return build_workload(self.workload_spec())

    def model_tokens_per_s(self) -> float:
        """Tokens per second of model time the workload streams on average."""
        items = self.work_items()
        return self.rate * sum(i.output_tokens for i in items) / len(items)

    def to_json(self) -> dict[str, Any]:
        return {
            "policies": list(self.policies),
            "workload": self.workload,
            "arrivals": "poisson",
            "rate_rps": self.rate,
            "wall_rate_rps": self.wall_rate,
            "num_requests": self.num_requests,
            "seed": self.seed,
            "slo_ttft_s": self.slo_ttft_s,
            "slo_tbt_s": self.slo_tbt_s,
            "time_scale": self.time_scale,
            "time_scale_note": self.scale_note,
            "profile": self.profile,
            "engines": "3 emulated vLLM (priority scheduling); ascendra: 2 LP + 1 HP, "
            "others: 3 mixed",
            "max_prompt_tokens": MAX_MODEL_LEN - MAX_OUTPUT_TOKENS,
            "max_output_tokens": self.max_output_tokens,
            "quick": self.quick,
            "times": "model time (wall-clock seconds / time_scale)",
        }

    def describe(self) -> list[str]:
        ttft, tbt = self.wall_slo
        lines = [
            f"engines   3 emulated vLLM engines, profile {self.profile} (Llama-3-8B on A100-80GB),"
            " priority scheduling; fresh engines for each policy",
            "layout    ascendra: 2 LP + 1 HP; round_robin / least_loaded: the same 3 as one pool",
            f"workload  {self.workload} lengths (Azure LLM inference trace 2023, fitted), Poisson "
            f"arrivals, {self.num_requests} requests, seed {self.seed}"
            + (
                f", outputs capped at {self.max_output_tokens} tokens"
                if self.max_output_tokens < MAX_OUTPUT_TOKENS
                else ""
            ),
            f"load      {self.rate:g} req/s, SLO TTFT {self.slo_ttft_s:g} s / mean TBT "
            f"{self.slo_tbt_s:g} s (model time)",
        ]
        note = f" ({self.scale_note})" if self.scale_note else ""
        if self.time_scale == 1.0:
            lines.append(f"scale     time scale 1: the emulated GPUs run at A100 speed{note}")
        else:
            lines.append(
                f"scale     time scale {self.time_scale:g}: every GPU step takes "
                f"{self.time_scale:g}x longer{note}; the demo sends {self.wall_rate:g} req/s, "
                f"SLOs and the proxy's timers are scaled alike ({ttft:g} s / {tbt:g} s of wall "
                "clock); times below are divided back by the scale"
            )
        return lines
