"""Decisions: what a policy tells its driver to do, as plain values that carry a reason.

Theory of operation.  Policies never raise to say "no candidate" and never touch HTTP; they
return one of these values and the driver (proxy or simulator) carries it out:

* :class:`Dispatch` - send the request to ``backend`` now (optionally with an engine
  ``priority``; vLLM semantics: lower runs first).
* :class:`Reject`   - end the request with an HTTP-shaped error (``status``/``code``/``message``
  are what the client sees; the proxy maps them to OpenAI error JSON at its edge).
* :class:`Hold`     - keep the request queued in the proxy and ask again at the next tick.

``reason`` is a short, stable, label-safe token (``round_robin``, ``least_inflight``,
``no_healthy_backend``...) meant for Prometheus labels and traces: keep its cardinality low.
Free-form context belongs in ``detail``.

Actions returned by ``Policy.tick`` name their request, because a tick reviews many:

* :class:`Assign` - bind a request held in the proxy queue to a backend (late binding).
* :class:`Move`   - take a request away from its current backend and dispatch it elsewhere:
  ``kind="offload"`` before its first token, ``kind="migrate"`` mid-stream (token-exact
  continuation).  The driver aborts the old attempt, then dispatches.
* :class:`Drop`   - end a request the policy can no longer serve.
* :class:`Warm`   - send a request's prompt to ``backend`` as a separate one-token generation
  whose output is discarded; it only fills that engine's prefix cache.
* :class:`SetRole` - a backend changes role (``draining=True``: it left the old role and takes
  the new one once drained).  Roles are the policy's state; drivers mirror them in telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ascendra_proxy.core.backend import Role

__all__ = [
    "Action",
    "Assign",
    "Decision",
    "Dispatch",
    "Drop",
    "Hold",
    "Move",
    "Reject",
    "SetRole",
    "Warm",
]


@dataclass(frozen=True, slots=True)
class Dispatch:
    backend: str
    reason: str
    priority: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    code: str
    message: str
    reason: str
    retry_after_s: int | None = None  # a Retry-After header for the client, when set


@dataclass(frozen=True, slots=True)
class Hold:
    reason: str
    detail: str = ""


Decision: TypeAlias = Dispatch | Reject | Hold


@dataclass(frozen=True, slots=True)
class Assign:
    request_id: str
    dispatch: Dispatch


@dataclass(frozen=True, slots=True)
class Move:
    request_id: str
    dispatch: Dispatch
    kind: Literal["offload", "migrate"]


@dataclass(frozen=True, slots=True)
class Drop:
    request_id: str
    reject: Reject


@dataclass(frozen=True, slots=True)
class Warm:
    request_id: str
    backend: str
    reason: str
    detail: str = ""
    priority: int | None = None  # engine priority to send it at (None: send none)


@dataclass(frozen=True, slots=True)
class SetRole:
    backend: str
    role: Role
    draining: bool
    reason: str
    detail: str = ""


Action: TypeAlias = Assign | Move | Drop | Warm | SetRole
