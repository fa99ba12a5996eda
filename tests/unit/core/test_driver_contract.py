"""The driver contract (core/driver.py): what each action means, for any driver."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ascendra_proxy.core.backend import BackendInfo, Role
from ascendra_proxy.core.contracts import PolicyNeeds
from ascendra_proxy.core.decisions import (
    Action,
    Assign,
    Dispatch,
    Drop,
    Move,
    Reject,
    SetRole,
    Warm,
)
from ascendra_proxy.core.driver import (
    HOLD_RECHECK_S,
    Carried,
    Effect,
    RequestFacts,
    Skip,
    carry_out,
    engine_priority,
    hold_recheck_s,
    interpret,
)
from ascendra_proxy.core.policies.registry import (
    POLICIES,
    build_policy,
    default_params,
    needs_of,
    profiles_needed,
)

HELD = RequestFacts(started=False, has_attempt=False)
WAITING = RequestFacts(started=False, has_attempt=True)
STREAMING = RequestFacts(started=True, has_attempt=True)
ASSIGN = Assign("r", Dispatch("b", "lp_room"))
OFFLOAD = Move("r", Dispatch("b", "offload_ttft"), "offload")
MIGRATE = Move("r", Dispatch("b", "migrate_tbt"), "migrate")
DROP = Drop("r", Reject(503, "infeasible", "late", "drop_late"))
WARM = Warm("r", "b", "warm_low_slack")
ROLE = SetRole("b", Role.HP, False, "role_grow_hp")


@pytest.mark.parametrize(
    ("action", "facts", "continuable", "effect", "skip", "label"),
    [
        (ROLE, None, False, Effect.ROLE, None, "role_grow_hp"),
        (ASSIGN, None, False, Effect.SKIP, Skip.FINISHED, None),
        (WARM, None, False, Effect.SKIP, Skip.FINISHED, None),
        (ASSIGN, HELD, False, Effect.ASSIGN, None, "lp_room"),
        (ASSIGN, WAITING, False, Effect.SKIP, Skip.DISPATCHED, None),
        (OFFLOAD, HELD, False, Effect.OFFLOAD, None, "offload_ttft"),
        (OFFLOAD, WAITING, False, Effect.OFFLOAD, None, "offload_ttft"),
        (MIGRATE, WAITING, False, Effect.OFFLOAD, None, "migrate_tbt"),  # no token yet
        (MIGRATE, STREAMING, True, Effect.MIGRATE, None, "migrate_tbt"),
        (OFFLOAD, STREAMING, True, Effect.MIGRATE, None, "offload_ttft"),  # a token came
        (MIGRATE, STREAMING, False, Effect.SKIP, Skip.MIGRATE_UNSUPPORTED, "migrate_unsupported"),
        (OFFLOAD, STREAMING, False, Effect.SKIP, Skip.MIGRATE_UNSUPPORTED, "migrate_unsupported"),
        (DROP, WAITING, False, Effect.DROP, None, "drop_late"),
        (WARM, STREAMING, False, Effect.WARM, None, "warm_low_slack"),
    ],
)
def test_interpret_follows_the_table(
    action: Action,
    facts: RequestFacts | None,
    continuable: bool,
    effect: Effect,
    skip: Skip | None,
    label: str | None,
) -> None:
    carried = interpret(action, facts, continuable)
    assert (carried.effect, carried.skip, carried.label) == (effect, skip, label)
    assert carried.applied is (skip is None)


@dataclass
class Target:
    """Records the effects it is asked for."""

    known: dict[str, RequestFacts]
    continuable: bool = True
    warmable: bool = True
    calls: list[tuple[str, object]] = field(default_factory=list)
    asked_continue: int = 0

    def facts(self, request_id: str) -> RequestFacts | None:
        return self.known.get(request_id)

    def can_continue(self, request_id: str) -> bool:
        self.asked_continue += 1
        return self.continuable

    def assign(self, action: Assign) -> None:
        self.calls.append(("assign", action.dispatch.backend))

    def move(self, action: Move, effect: Effect) -> None:
        self.calls.append(("move", effect))

    def drop(self, action: Drop) -> None:
        self.calls.append(("drop", action.reject.status))

    def warm(self, action: Warm) -> bool:
        self.calls.append(("warm", action.backend))
        return self.warmable

    def set_role(self, action: SetRole) -> None:
        self.calls.append(("role", action.role))


def test_carry_out_calls_one_effect_and_only_after_the_facts_allow_it() -> None:
    t = Target({"r": STREAMING})
    assert carry_out(MIGRATE, t) == Carried(MIGRATE, Effect.MIGRATE)
    assert carry_out(ASSIGN, t).skip is Skip.DISPATCHED
    assert carry_out(ROLE, t).applied
    assert t.calls == [("move", Effect.MIGRATE), ("role", Role.HP)]
    refused = Target({"r": STREAMING}, continuable=False)
    assert carry_out(OFFLOAD, refused).skip is Skip.MIGRATE_UNSUPPORTED and not refused.calls


def test_the_continuation_is_only_asked_about_for_a_started_request() -> None:
    t = Target({"r": WAITING}, continuable=False)
    assert carry_out(MIGRATE, t).effect is Effect.OFFLOAD
    assert t.asked_continue == 0 and t.calls == [("move", Effect.OFFLOAD)]


def test_a_warm_up_for_a_backend_the_driver_lacks_is_a_skip() -> None:
    t = Target({"r": WAITING}, warmable=False)
    carried = carry_out(WARM, t)
    assert carried.skip is Skip.UNKNOWN_BACKEND and carried.label is None


def test_finished_requests_get_no_effect() -> None:
    t = Target({})
    for action in (ASSIGN, OFFLOAD, MIGRATE, DROP, WARM):
        assert carry_out(action, t).skip is Skip.FINISHED
    assert t.calls == []


def test_shared_timing_and_priority_rules() -> None:
    assert hold_recheck_s(None) == HOLD_RECHECK_S
    assert hold_recheck_s(0.02) == 0.02 and hold_recheck_s(1.0) == HOLD_RECHECK_S
    fcfs = BackendInfo("a", "p", Role.LP, "vllm", "m")
    prio = BackendInfo("a", "p", Role.LP, "vllm", "m", priority_scheduling=True)
    assert engine_priority(fcfs, 7) is None and engine_priority(prio, 7) == 7


# -- what policies declare ----------------------------------------------------------------


def test_every_policy_declares_its_needs() -> None:
    for name in POLICIES:
        assert isinstance(needs_of(name, default_params(name)), PolicyNeeds)
    asc = needs_of("ascendra", default_params("ascendra"))
    assert asc.roles and asc.predictor is not None and asc.latency_profiles
    assert asc.tick_s == 0.02 and asc.prefix_blocks_per_backend == 65536
    rr = needs_of("round_robin", default_params("round_robin"))
    assert rr == PolicyNeeds()  # routes only: no roles, predictor, tick or profiles


def test_profiles_come_in_as_values() -> None:
    infos = (
        BackendInfo("a", "lp", Role.LP, "vllm", "m", profile="x"),
        BackendInfo("b", "hp", Role.HP, "vllm", "m", profile="x"),
    )
    asc = needs_of("ascendra", default_params("ascendra"))
    assert profiles_needed(asc, infos) == ["x"]
    assert profiles_needed(PolicyNeeds(), infos) == []
    with pytest.raises(ValueError, match="needs the latency profiles"):
        build_policy("ascendra", default_params("ascendra"), infos)
    assert build_policy("round_robin", default_params("round_robin"), infos).name == "round_robin"
