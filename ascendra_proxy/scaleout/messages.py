"""The worker <-> scheduler messages: typed values and their JSON wire form.

Theory of operation.  Every message is one JSON object (one WebSocket text frame, encoded
with orjson) whose ``t`` field names its type; ``docs/scale-out-protocol.md`` is the
language-neutral description of the same schema.  The scheduler sees request *metadata*
only (sizes, deadlines, progress counters), never prompts or tokens.  Times are seconds on
the sender's monotonic clock; the scheduler maps a worker's times onto its own with the
offset it learns from ``hello.now``.  Every scheduler message that changes a request
carries the sender's ``epoch`` (the lease's fencing token): a worker drops any message whose
epoch is older than the newest it has seen.

``decode`` raises :class:`ProtocolError` on anything malformed; the receiver closes that
connection (a peer speaking another schema must not half-work).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from ascendra_proxy.core.decisions import Action
from ascendra_proxy.core.request import Outcome, Phase, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.core.wire import WireError, decode_action, encode_action

__all__ = [
    "PROTOCOL_VERSION",
    "ActionMessage",
    "Finish",
    "Hello",
    "NotLeader",
    "Progress",
    "ProtocolError",
    "RouteAsk",
    "SchedulerMessage",
    "Welcome",
    "WorkerMessage",
    "decode",
    "encode",
    "request_from_wire",
    "request_to_wire",
]

PROTOCOL_VERSION = 1


class ProtocolError(ValueError):
    """A frame that is not a valid message of this schema."""


# -- request metadata ---------------------------------------------------------------------

# RequestState fields that travel, in this order, as one JSON array (compact at 1000s of
# streams per progress message).  Identity and size first, then progress.
_STATIC = ("id", "model", "prompt_tokens", "max_tokens", "arrival", "prompt_tokens_exact")
_PROGRESS = (
    "backend",
    "dispatched_at",
    "first_token_at",
    "last_token_at",
    "tokens",
    "gap_sum",
    "gaps",
    "max_gap",
    "attempts",
    "moves",
)
_TIMES = ("arrival", "dispatched_at", "first_token_at", "last_token_at")


def request_to_wire(s: RequestState, with_prefix: bool = True) -> list[Any]:
    """A request's metadata and progress as a JSON array (see the protocol document)."""
    row: list[Any] = [getattr(s, k) for k in _STATIC]
    row += [s.slo.ttft_s, s.slo.tbt_s, s.slo_class, s.phase.value]
    row += [getattr(s, k) for k in _PROGRESS]
    row.append(list(s.prefix_hashes) if with_prefix else None)
    return row


def request_from_wire(row: Any, offset: float) -> RequestState:
    """The scheduler's mirror of a worker's request; ``offset`` maps worker times to ours."""
    if not isinstance(row, list) or len(row) != len(_STATIC) + 4 + len(_PROGRESS) + 1:
        raise ProtocolError(f"bad request row: {row!r:.200}")
    try:
        values = dict(zip(_STATIC, row, strict=False))
        ttft_s, tbt_s, slo_class, phase = row[len(_STATIC) : len(_STATIC) + 4]
        s = RequestState(
            id=str(values["id"]),
            model=str(values["model"]),
            prompt_tokens=int(values["prompt_tokens"]),
            max_tokens=int(values["max_tokens"]),
            slo=SLO(float(ttft_s), float(tbt_s)),
            arrival=float(values["arrival"]) + offset,
            prompt_tokens_exact=bool(values["prompt_tokens_exact"]),
            slo_class=None if slo_class is None else str(slo_class),
            phase=Phase(phase),
        )
        apply_progress(s, row[len(_STATIC) + 4 :], offset)
    except (TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(f"bad request row: {exc}") from exc
    return s


def apply_progress(s: RequestState, tail: list[Any], offset: float) -> None:
    """Copy progress fields (and prefix hashes, when sent) from a wire row's tail."""
    for k, v in zip(_PROGRESS, tail, strict=False):
        if k in _TIMES and v is not None:
            v = float(v) + offset
        setattr(s, k, v)
    hashes = tail[len(_PROGRESS)] if len(tail) > len(_PROGRESS) else None
    if hashes is not None:
        s.prefix_hashes = tuple(int(h) for h in hashes)


def progress_row(s: RequestState) -> list[Any]:
    """What changes while a request lives: id, phase, then the progress fields."""
    return [s.id, s.phase.value, *(getattr(s, k) for k in _PROGRESS)]


def apply_progress_row(s: RequestState, row: list[Any], offset: float) -> None:
    if s.phase is not Phase.FINISHED:
        s.phase = Phase(row[1])
    apply_progress(s, row[2:], offset)


# -- worker -> scheduler ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of a connection: who the worker is, its clock, and every live request
    (``waiting``: still needs a decision; ``running``: already on a backend)."""

    worker: str
    now: float
    waiting: list[list[Any]] = field(default_factory=list)  # (request row, exclude) pairs
    running: list[list[Any]] = field(default_factory=list)  # request rows
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class RouteAsk:
    """Decide where this request goes (fresh, retried after failures, or resumed)."""

    request: list[Any]
    exclude: list[str]


@dataclass(frozen=True, slots=True)
class Progress:
    """Periodic: progress rows of live requests that changed, the worker's exact per-backend
    counts ``{backend: [inflight, queued_prompt_tokens]}``, backends its breakers hold
    open, and how many dispatching messages (assign/move) it has applied (``ack``)."""

    ack: int
    counts: dict[str, list[int]]
    down: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True, slots=True)
class Finish:
    """A request ended (exactly once)."""

    id: str
    outcome: str
    at: float


WorkerMessage: TypeAlias = Hello | RouteAsk | Progress | Finish


# -- scheduler -> worker ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    epoch: int
    scheduler: str
    progress_s: float
    rows: bool = True  # the policy reviews running requests: send their progress rows
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class NotLeader:
    """This scheduler is a standby; the worker should try another address."""

    scheduler: str


@dataclass(frozen=True, slots=True)
class ActionMessage:
    """One policy action for a request this worker owns (or a role change, for all), in
    the core's wire form (``core/wire.py``); the worker carries it out through the core's
    driver contract (``core/driver.py``), as the single process does."""

    epoch: int
    action: Action


SchedulerMessage: TypeAlias = Welcome | NotLeader | ActionMessage


# -- codec --------------------------------------------------------------------------------


def encode(msg: WorkerMessage | SchedulerMessage) -> bytes:
    return orjson.dumps(_to_dict(msg))


def _to_dict(msg: WorkerMessage | SchedulerMessage) -> dict[str, Any]:
    if isinstance(msg, ActionMessage):
        return {"t": "action", "epoch": msg.epoch, "action": encode_action(msg.action)}
    if isinstance(msg, Progress):
        return {
            "t": "progress",
            "ack": msg.ack,
            "counts": msg.counts,
            "down": msg.down,
            "rows": msg.rows,
        }
    if isinstance(msg, RouteAsk):
        return {"t": "route", "request": msg.request, "exclude": msg.exclude}
    if isinstance(msg, Finish):
        return {"t": "finish", "id": msg.id, "outcome": msg.outcome, "at": msg.at}
    if isinstance(msg, Hello):
        return {
            "t": "hello",
            "v": msg.version,
            "worker": msg.worker,
            "now": msg.now,
            "waiting": msg.waiting,
            "running": msg.running,
        }
    if isinstance(msg, Welcome):
        return {
            "t": "welcome",
            "v": msg.version,
            "epoch": msg.epoch,
            "scheduler": msg.scheduler,
            "progress_s": msg.progress_s,
            "rows": msg.rows,
        }
    return {"t": "not_leader", "scheduler": msg.scheduler}


def decode(frame: bytes | str) -> WorkerMessage | SchedulerMessage:
    try:
        m = orjson.loads(frame)
        if not isinstance(m, dict):
            raise ProtocolError("a message is a JSON object")
        return _from_dict(m)
    except ProtocolError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, WireError) as exc:
        raise ProtocolError(f"bad message: {type(exc).__name__}: {exc}") from exc


def _from_dict(m: dict[str, Any]) -> WorkerMessage | SchedulerMessage:
    t = m.get("t")
    if t == "action":
        return ActionMessage(int(m["epoch"]), decode_action(m["action"]))
    if t == "progress":
        return Progress(int(m["ack"]), dict(m["counts"]), list(m["down"]), list(m["rows"]))
    if t == "route":
        return RouteAsk(list(m["request"]), [str(x) for x in m["exclude"]])
    if t == "finish":
        return Finish(str(m["id"]), Outcome(m["outcome"]).value, float(m["at"]))
    if t == "hello":
        return Hello(
            str(m["worker"]), float(m["now"]), list(m["waiting"]), list(m["running"]), int(m["v"])
        )
    if t == "welcome":
        return Welcome(
            int(m["epoch"]),
            str(m["scheduler"]),
            float(m["progress_s"]),
            bool(m["rows"]),
            int(m["v"]),
        )
    if t == "not_leader":
        return NotLeader(str(m["scheduler"]))
    raise ProtocolError(f"unknown message type {t!r}")
