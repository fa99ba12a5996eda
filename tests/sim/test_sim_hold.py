"""A Hold means in the simulator what it means in the live gateway (core/driver.HoldLimits)."""

from __future__ import annotations

from collections.abc import Sequence

from sim_helpers import config_dict, workload

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Action, Decision, Dispatch, Hold
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.sim.setup import parse_sim_config
from ascendra_proxy.sim.simulator import Simulator


class HoldsUntil:
    """Holds every request until ``release_s`` of driver time, then sends it to lp-0."""

    name = "holds"
    tick_interval_s = None

    def __init__(self, release_s: float) -> None:
        self.release_s = release_s

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        return Hold("held_edf") if now < self.release_s else Dispatch("lp-0", "late")

    def on_finish(self, req: RequestState, now: float) -> None:
        return None

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        return ()


def run(
    release_s: float, first_byte_s: float, max_queued: int = 4096, max_tokens: int = 1 << 22
) -> list[Outcome | None]:
    doc = config_dict(hp=0)
    doc["timeouts"] = {"first_byte_s": first_byte_s}
    doc["limits"] = {"max_queued_requests": max_queued, "max_queued_prompt_tokens": max_tokens}
    items = workload(n=20, rate=50.0, prompt="fixed:100", output="fixed:4")
    result = Simulator(parse_sim_config(doc), items, policy=HoldsUntil(release_s)).run()
    return [f.state.outcome for f in result.flights]


def test_a_request_held_past_the_first_byte_budget_times_out() -> None:
    outcomes = run(release_s=100.0, first_byte_s=2.0)
    assert outcomes == [Outcome.TIMED_OUT] * 20


def test_a_request_released_within_the_budget_completes() -> None:
    assert run(release_s=1.0, first_byte_s=30.0) == [Outcome.COMPLETED] * 20


def test_a_full_queue_refuses_the_next_hold() -> None:
    outcomes = run(release_s=100.0, first_byte_s=2.0, max_queued=5)
    assert outcomes.count(Outcome.REJECTED) == 15 and outcomes.count(Outcome.TIMED_OUT) == 5


def test_a_queue_full_of_prompt_tokens_refuses_the_next_hold() -> None:
    outcomes = run(release_s=100.0, first_byte_s=2.0, max_tokens=700)  # 7 prompts of 100
    assert outcomes.count(Outcome.REJECTED) == 13 and outcomes.count(Outcome.TIMED_OUT) == 7
