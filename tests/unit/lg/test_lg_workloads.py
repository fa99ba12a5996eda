"""Building work items: determinism per aspect, SLO mixes, prefixes, disconnects, traces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from loadgen.arrivals import ArrivalSpec
from loadgen.lengths import Fixed, Uniform
from loadgen.workloads import (
    DisconnectSpec,
    PrefixSpec,
    SloClass,
    WorkloadSpec,
    build_workload,
    parse_slo_mix,
)

SLO = (SloClass(1.0, 0.15),)


def spec(**kw: object) -> WorkloadSpec:
    base = WorkloadSpec(
        num_requests=400,
        arrivals=ArrivalSpec("poisson", 10.0),
        slo_classes=SLO,
        prompt_len=Uniform(10, 500),
        output_len=Uniform(5, 50),
        seed=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_slo_mix_parses_and_normalises() -> None:
    mix = parse_slo_mix("1.0:0.15:7, 2.0:0.3:3")
    assert mix == (SloClass(1.0, 0.15, 0.7), SloClass(2.0, 0.3, 0.3))
    for bad in ("1.0:0.15", "a:b:c", "1:0.1:0"):
        with pytest.raises(ValueError):
            parse_slo_mix(bad)


def test_rate_changes_only_arrivals() -> None:
    a = build_workload(spec())
    b = build_workload(spec().with_rate(30.0))
    assert [(x.prompt_tokens, x.output_tokens) for x in a] == [
        (x.prompt_tokens, x.output_tokens) for x in b
    ]
    assert a[-1].arrival_s > 2 * b[-1].arrival_s
    assert build_workload(spec()) == a  # same seed, same items


def test_slo_mix_shares_prefix_groups_and_exact_disconnect_count() -> None:
    items = build_workload(
        spec(
            slo_classes=parse_slo_mix("1.0:0.15:0.75,2.0:0.3:0.25"),
            prefix=PrefixSpec(groups=4, tokens=100),
            disconnect=DisconnectSpec(0.1, 0.5),
        )
    )
    tight = sum(1 for x in items if x.slo_ttft_s == 1.0)
    assert 0.68 < tight / len(items) < 0.82
    assert {x.prefix_group for x in items} == {0, 1, 2, 3}
    assert all(x.prefix_tokens == 100 and x.prompt_tokens >= 110 for x in items)
    leaving = [x for x in items if x.disconnect_after_s is not None]
    assert len(leaving) == 40 and {x.disconnect_after_s for x in leaving} == {0.5}
    # adding disconnects and prefixes did not move arrivals
    assert [x.arrival_s for x in items] == [x.arrival_s for x in build_workload(spec())]


def test_trace_lengths_and_arrivals(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n5,100,10\n6,200,20\n9,300,30\n")
    items = build_workload(
        spec(
            num_requests=3,
            trace=str(p),
            arrivals=ArrivalSpec("trace"),
            prompt_len=None,
            output_len=None,
        )
    )
    assert [(x.arrival_s, x.prompt_tokens, x.output_tokens) for x in items] == [
        (0.0, 100, 10),
        (1.0, 200, 20),
        (4.0, 300, 30),
    ]
    retimed = build_workload(
        spec(
            num_requests=3,
            trace=str(p),
            arrivals=ArrivalSpec("trace", rate=1.0),
            prompt_len=None,
            output_len=Fixed(7),
        )
    )
    assert [x.arrival_s for x in retimed] == [0.0, 0.5, 2.0]
    assert {x.output_tokens for x in retimed} == {7}  # an explicit spec overrides the trace
    with pytest.raises(ValueError, match="the trace has 3"):
        build_workload(spec(num_requests=4, trace=str(p), arrivals=ArrivalSpec("trace")))


def test_named_workload_and_errors() -> None:
    items = build_workload(spec(workload="azure-code", prompt_len=None, output_len=None))
    assert sorted(x.output_tokens for x in items)[len(items) // 2] < 40  # code outputs are short
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        build_workload(spec(workload="nope", prompt_len=None))
    with pytest.raises(ValueError, match="at least one SLO class"):
        build_workload(spec(slo_classes=()))


def test_caps_clip_lengths_before_the_prefix() -> None:
    items = build_workload(
        spec(max_prompt_tokens=100, max_output_tokens=7, prefix=PrefixSpec(groups=1, tokens=20))
    )
    assert max(x.prompt_tokens for x in items) == 120
    assert max(x.output_tokens for x in items) == 7
