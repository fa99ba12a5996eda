"""The driver contract's values as plain mappings, for a scheduler in another process.

Theory of operation.  A scheduler that runs the policy apart from the stream workers sends
them the policy's decisions and actions, and hears back what became of each action; this
module turns those values into JSON-ready mappings of strings, numbers, booleans and None
(any language can read them) and back, checking every field on the way in.  Encoding and
decoding are exact inverses: ``decode_action(encode_action(a)) == a``.

Shapes (``type`` names the value; optional fields may be absent or null):

* decisions: ``{"type": "dispatch", "backend", "reason", "priority"?, "detail"?}``,
  ``{"type": "hold", "reason", "detail"?}``,
  ``{"type": "reject", "status", "code", "message", "reason"}``;
* actions: ``{"type": "assign", "request_id", "dispatch": <dispatch>}``,
  ``{"type": "move", "request_id", "dispatch": <dispatch>, "kind": "offload"|"migrate"}``,
  ``{"type": "drop", "request_id", "reject": <reject>}``,
  ``{"type": "warm", "request_id", "backend", "reason", "detail"?, "priority"?}``,
  ``{"type": "set_role", "backend", "role": "lp"|"hp"|"mixed", "draining", "reason",
  "detail"?}``;
* what became of an action: ``{"action": <action>, "effect": <Effect value>, "skip":
  <Skip value>|null}``.

Nothing here reads or writes bytes: the transport (and its JSON library) is the driver's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

__all__ = [
    "WireError",
    "decode_action",
    "decode_carried",
    "decode_decision",
    "encode_action",
    "encode_carried",
    "encode_decision",
]

Wire = dict[str, Any]


class WireError(ValueError):
    """A mapping that is not a valid encoding (the message names the field)."""


def encode_decision(d: Decision) -> Wire:
    if isinstance(d, Dispatch):
        return {
            "type": "dispatch",
            "backend": d.backend,
            "reason": d.reason,
            "priority": d.priority,
            "detail": d.detail,
        }
    if isinstance(d, Hold):
        return {"type": "hold", "reason": d.reason, "detail": d.detail}
    return {
        "type": "reject",
        "status": d.status,
        "code": d.code,
        "message": d.message,
        "reason": d.reason,
    }


def decode_decision(m: object) -> Decision:
    w = _mapping(m, "decision")
    kind = _str(w, "type")
    if kind == "dispatch":
        return _dispatch(w)
    if kind == "hold":
        return Hold(_str(w, "reason"), _str(w, "detail", ""))
    if kind == "reject":
        return _reject(w)
    raise WireError(f"type: unknown decision {kind!r}")


def encode_action(a: Action) -> Wire:
    if isinstance(a, Assign):
        return {
            "type": "assign",
            "request_id": a.request_id,
            "dispatch": encode_decision(a.dispatch),
        }
    if isinstance(a, Move):
        return {
            "type": "move",
            "request_id": a.request_id,
            "dispatch": encode_decision(a.dispatch),
            "kind": a.kind,
        }
    if isinstance(a, Drop):
        return {"type": "drop", "request_id": a.request_id, "reject": encode_decision(a.reject)}
    if isinstance(a, Warm):
        return {
            "type": "warm",
            "request_id": a.request_id,
            "backend": a.backend,
            "reason": a.reason,
            "detail": a.detail,
            "priority": a.priority,
        }
    return {
        "type": "set_role",
        "backend": a.backend,
        "role": a.role.value,
        "draining": a.draining,
        "reason": a.reason,
        "detail": a.detail,
    }


def decode_action(m: object) -> Action:
    w = _mapping(m, "action")
    kind = _str(w, "type")
    if kind == "assign":
        return Assign(_str(w, "request_id"), _dispatch(_mapping(w.get("dispatch"), "dispatch")))
    if kind == "move":
        move_kind = _str(w, "kind")
        if move_kind not in ("offload", "migrate"):
            raise WireError(f"kind: expected 'offload' or 'migrate', got {move_kind!r}")
        dispatch = _dispatch(_mapping(w.get("dispatch"), "dispatch"))
        return Move(_str(w, "request_id"), dispatch, move_kind)  # type: ignore[arg-type]
    if kind == "drop":
        return Drop(_str(w, "request_id"), _reject(_mapping(w.get("reject"), "reject")))
    if kind == "warm":
        rid, backend, reason = _str(w, "request_id"), _str(w, "backend"), _str(w, "reason")
        return Warm(rid, backend, reason, _str(w, "detail", ""), _opt_int(w, "priority"))
    if kind == "set_role":
        try:
            role = Role(_str(w, "role"))
        except ValueError:
            raise WireError(f"role: unknown role {w.get('role')!r}") from None
        draining = w.get("draining")
        if type(draining) is not bool:
            raise WireError("draining: expected a boolean")
        return SetRole(_str(w, "backend"), role, draining, _str(w, "reason"), _str(w, "detail", ""))
    raise WireError(f"type: unknown action {kind!r}")


def encode_carried(c: Carried) -> Wire:
    skip = None if c.skip is None else c.skip.value
    return {"action": encode_action(c.action), "effect": c.effect.value, "skip": skip}


def decode_carried(m: object) -> Carried:
    w = _mapping(m, "carried")
    try:
        effect = Effect(_str(w, "effect"))
        skip = None if w.get("skip") is None else Skip(_str(w, "skip"))
    except ValueError as exc:
        raise WireError(f"effect/skip: {exc}") from None
    return Carried(decode_action(w.get("action")), effect, skip)


# -- field checks ---------------------------------------------------------------------------


def _mapping(m: object, what: str) -> Mapping[str, Any]:
    if not isinstance(m, Mapping):
        raise WireError(f"{what}: expected a mapping, got {type(m).__name__}")
    return m


_MISSING = object()


def _str(w: Mapping[str, Any], key: str, default: object = _MISSING) -> str:
    v = w.get(key)
    if v is None and default is not _MISSING:
        return str(default)
    if not isinstance(v, str):
        raise WireError(f"{key}: expected a string, got {v!r}")
    return v


def _opt_int(w: Mapping[str, Any], key: str) -> int | None:
    v = w.get(key)
    if v is None:
        return None
    if type(v) is not int:
        raise WireError(f"{key}: expected an integer or null, got {v!r}")
    return v


def _dispatch(w: Mapping[str, Any]) -> Dispatch:
    if w.get("type", "dispatch") != "dispatch":
        raise WireError(f"dispatch: wrong type {w.get('type')!r}")
    return Dispatch(
        _str(w, "backend"), _str(w, "reason"), _opt_int(w, "priority"), _str(w, "detail", "")
    )


def _reject(w: Mapping[str, Any]) -> Reject:
    if w.get("type", "reject") != "reject":
        raise WireError(f"reject: wrong type {w.get('type')!r}")
    status = w.get("status")
    if type(status) is not int:
        raise WireError(f"status: expected an integer, got {status!r}")
    return Reject(status, _str(w, "code"), _str(w, "message"), _str(w, "reason"))
