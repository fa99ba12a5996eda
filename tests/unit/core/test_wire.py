"""The contract's values as plain mappings: exact round trips, every bad field named."""

from __future__ import annotations

import json

import pytest

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.decisions import (
    Action,
    Assign,
    Decision,
    Dispatch,
    Drop,
    Hold,
    Move,
    Reject,
    SetRole,
    Warm,
)
from ascendra_proxy.core.driver import Carried, Effect, Skip
from ascendra_proxy.core.wire import (
    WireError,
    decode_action,
    decode_carried,
    decode_decision,
    encode_action,
    encode_carried,
    encode_decision,
)

REJECT = Reject(503, "infeasible", "cannot meet the deadline", "drop_late")
DECISIONS: list[Decision] = [
    Dispatch("lp-0", "lp_room"),
    Dispatch("hp-0", "hp_ticket", priority=-12, detail="x"),
    Hold("held_edf", "3 held"),
    REJECT,
]
ACTIONS: list[Action] = [
    Assign("r1", Dispatch("lp-1", "lp_room", 7)),
    Move("r2", Dispatch("hp-0", "offload_ttft"), "offload"),
    Move("r3", Dispatch("lp-0", "migrate_tbt", None, "gain 0.2 s"), "migrate"),
    Drop("r4", REJECT),
    Warm("r5", "hp-0", "warm_low_slack"),
    Warm("r6", "hp-0", "warm_low_slack", "d", priority=1 << 30),
    SetRole("lp-1", Role.HP, True, "role_grow_hp", "util 0.9"),
]


@pytest.mark.parametrize("d", DECISIONS)
def test_decisions_round_trip_through_json(d: Decision) -> None:
    assert decode_decision(json.loads(json.dumps(encode_decision(d)))) == d


@pytest.mark.parametrize("a", ACTIONS)
def test_actions_round_trip_through_json(a: Action) -> None:
    assert decode_action(json.loads(json.dumps(encode_action(a)))) == a


def test_what_became_of_an_action_round_trips() -> None:
    for c in (
        Carried(ACTIONS[2], Effect.SKIP, Skip.MIGRATE_UNSUPPORTED),
        Carried(ACTIONS[0], Effect.ASSIGN),
    ):
        assert decode_carried(json.loads(json.dumps(encode_carried(c)))) == c


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ([], "action: expected a mapping"),
        ({"type": "teleport"}, "type: unknown action"),
        (
            {"type": "assign", "request_id": 3, "dispatch": {"backend": "a", "reason": "r"}},
            "request_id",
        ),
        ({"type": "assign", "request_id": "r"}, "dispatch: expected a mapping"),
        (
            {
                "type": "move",
                "request_id": "r",
                "dispatch": {"backend": "a", "reason": "r"},
                "kind": "jump",
            },
            "kind",
        ),
        (
            {
                "type": "drop",
                "request_id": "r",
                "reject": {"status": "503", "code": "c", "message": "m", "reason": "r"},
            },
            "status",
        ),
        (
            {"type": "warm", "request_id": "r", "backend": "b", "reason": "w", "priority": 1.5},
            "priority",
        ),
        (
            {"type": "set_role", "backend": "b", "role": "vip", "draining": False, "reason": "r"},
            "role",
        ),
        (
            {"type": "set_role", "backend": "b", "role": "hp", "draining": "no", "reason": "r"},
            "draining",
        ),
    ],
)
def test_bad_encodings_name_the_field(bad: object, field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode_action(bad)
