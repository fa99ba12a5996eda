"""The observed step time of a backend without a latency profile is per token: streams whose
tokens reached the proxy several at a time count them as zero gaps, not as one long gap."""

from __future__ import annotations

import pytest
from asc_world import facts

from ascendra_proxy.core.backend import BackendSnapshot, Role
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.core.slo import SLO


def stream(arrivals: list[tuple[float, int]]) -> RequestState:
    req = RequestState(
        id="r", model="m", prompt_tokens=10, max_tokens=100, slo=SLO(1.0, 0.1), arrival=0.0
    )
    req.on_dispatch(0.0, "b0")
    for now, n in arrivals:
        req.on_tokens(now, n)
    return req


def backend() -> BackendState:
    snap = BackendSnapshot(
        name="b0",
        pool="p",
        role=Role.MIXED,
        engine="vllm",
        model="m",
        healthy=True,
        inflight=1,
        queued_prompt_tokens=0,
        scraped=None,
    )
    return BackendState.of(snap, facts(), Role.MIXED, False)


@pytest.mark.parametrize(
    "arrivals",
    [
        [(0.10 + 0.02 * i, 1) for i in range(9)],  # one token per read, 20 ms apart
        [(0.10, 1), (0.16, 3), (0.22, 3), (0.26, 2)],  # the same 9 tokens, coalesced
    ],
)
def test_recent_step_is_the_mean_tbt_however_reads_coalesce(
    arrivals: list[tuple[float, int]],
) -> None:
    b = backend()
    b.streams = [stream(arrivals)]
    b.aggregate(now=0.3)
    step = b.features().recent_step_s
    assert step == pytest.approx(0.16 / 8)  # (last - first) / (tokens - 1)
