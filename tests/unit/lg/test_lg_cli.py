"""Command-line options become the intended workload (no server needed)."""

from __future__ import annotations

import pytest

from loadgen.cli import build_parser, workload_spec
from loadgen.workloads import SloClass, WorkloadSpec, build_workload

BASE = ["--url", "http://127.0.0.1:1/v1", "--out", "x.json"]


def spec_of(*argv: str, rate: float | None = None) -> WorkloadSpec:
    args = build_parser().parse_args(["run", *BASE, *argv])
    return workload_spec(args, args.rate if rate is None else rate)


def test_named_workload_with_caps_mix_prefix_and_disconnects() -> None:
    spec = spec_of(
        "--workload", "azure-conv", "--num-requests", "50", "--rate", "8", "--max-prompt-len",
        "2000", "--max-output-len", "64", "--slo-mix", "1:0.15:3,2:0.3:1", "--prefix-groups",
        "3", "--prefix-tokens", "200", "--disconnect-share", "0.2", "--burstiness", "0.5",
    )  # fmt: skip
    items = build_workload(spec)
    assert len(items) == 50
    assert max(i.prompt_tokens for i in items) <= 2200 and max(i.output_tokens for i in items) <= 64
    assert spec.arrivals.kind == "gamma"
    assert spec.slo_classes == (SloClass(1, 0.15, 0.75), SloClass(2, 0.3, 0.25))
    assert sum(i.disconnect_after_s is not None for i in items) == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workload", "fixed", "--num-requests", "5", "--rate", "1"], "needs --prompt-len"),
        (["--workload", "azure-code", "--rate", "1", "--slo-ttft", "1", "--slo-tbt", "1"],
         "--num-requests is required"),
        (["--workload", "azure-code", "--num-requests", "5", "--slo-ttft", "1", "--slo-tbt", "1"],
         "poisson arrivals need --rate"),
        (["--workload", "azure-code", "--num-requests", "5", "--rate", "1", "--rate-scale", "2",
          "--slo-ttft", "1", "--slo-tbt", "1"], "--rate-scale applies to trace arrivals"),
        (["--workload", "azure-code", "--num-requests", "5", "--rate", "1", "--slo-mix", "1:1:1",
          "--slo-ttft", "1"], "either --slo-mix or"),
    ],
)  # fmt: skip
def test_bad_option_combinations_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec_of(*argv)
