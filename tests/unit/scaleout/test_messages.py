"""The wire schema: every message survives the codec; malformed frames are refused."""

from __future__ import annotations

import orjson
import pytest

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.decisions import Assign, Dispatch, Drop, Move, Reject, SetRole, Warm
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.scaleout.messages import (
    ActionMessage,
    Finish,
    Hello,
    NotLeader,
    Progress,
    ProtocolError,
    RouteAsk,
    Welcome,
    decode,
    encode,
    request_from_wire,
    request_to_wire,
)


def _state() -> RequestState:
    s = RequestState("r1", "m", 120, 64, SLO(1.0, 0.1), arrival=10.0, slo_class="gold")
    s.prefix_hashes = (11, -7, 2**62)
    s.on_dispatch(10.5, "lp-0")
    s.on_tokens(10.8, 1)
    s.on_tokens(10.9, 3)
    return s


MESSAGES = [
    Hello("w1", 5.0, [[request_to_wire(_state()), ["hp-0"]]], [request_to_wire(_state())]),
    RouteAsk(request_to_wire(_state()), ["lp-1"]),
    Progress(3, {"lp-0": [2, 100]}, ["hp-0"], [[*request_to_wire(_state())[:1], "queued"]]),
    Finish("r1", "completed", 12.5),
    Welcome(4, "s1", 0.02, False),
    NotLeader("s2"),
    ActionMessage(2, Assign("r1", Dispatch("lp-0", "lp_room", 17, "edf"))),
    ActionMessage(2, Move("r1", Dispatch("hp-0", "offload_ttft", None), "offload")),
    ActionMessage(2, Drop("r1", Reject(503, "no_backend", "nothing serves m", "no_healthy"))),
    ActionMessage(2, Warm("r1", "hp-0", "warm", "", 3)),
    ActionMessage(2, SetRole("lp-1", Role.HP, True, "grow_hp")),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_codec(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


def test_a_request_mirror_equals_the_original_shifted_by_the_clock_offset() -> None:
    s = _state()
    m = request_from_wire(orjson.loads(orjson.dumps(request_to_wire(s))), offset=100.0)
    assert (m.id, m.slo, m.slo_class, m.prefix_hashes) == (
        s.id,
        s.slo,
        s.slo_class,
        s.prefix_hashes,
    )
    assert (m.tokens, m.gaps, m.backend, m.phase) == (s.tokens, s.gaps, s.backend, s.phase)
    assert m.arrival == s.arrival + 100.0 and m.first_token_at == s.first_token_at + 100.0
    assert m.next_token_deadline == pytest.approx(s.next_token_deadline + 100.0)


@pytest.mark.parametrize(
    "frame",
    [
        b"[1]",
        b"not json",
        b'{"t": "teleport"}',
        b'{"t": "route", "request": [1], "exclude": []}',
        b'{"t": "move", "epoch": 1, "id": "r", "backend": "b", "reason": "x", "kind": "jump"}',
        b'{"t": "finish", "id": "r", "outcome": "exploded", "at": 1}',
    ],
)
def test_malformed_frames_are_protocol_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        msg = decode(frame)
        if isinstance(msg, RouteAsk):
            request_from_wire(msg.request, 0.0)
