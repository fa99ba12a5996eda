"""``round_robin``: rotate over the eligible backends of each model, in snapshot order.

Rule: for each model the policy remembers the backend it chose last; the next request for
that model goes to the first eligible backend (see :mod:`.eligibility`) after it in the
order the driver lists backends (config order), wrapping around.  A backend that is
unhealthy, excluded or full is skipped without disturbing the rotation of the others; if
the last chosen backend disappeared from the list the rotation restarts at the top.
Pool roles are ignored (every pool is part of the rotation), no engine priority is sent,
and nothing happens at ticks.  Deterministic: same inputs, same choices.

YAML::

    policy: {type: round_robin}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot
from ascendra_proxy.core.decisions import Decision, Dispatch
from ascendra_proxy.core.policies.base import RouteOnly
from ascendra_proxy.core.policies.eligibility import eligible
from ascendra_proxy.core.request import RequestState

__all__ = ["RoundRobin", "RoundRobinParams", "make_round_robin"]


@dataclass(frozen=True, slots=True)
class RoundRobinParams:
    """round_robin takes no parameters."""


class RoundRobin(RouteOnly):
    name = "round_robin"

    def __init__(self) -> None:
        self._last: dict[str, str] = {}  # model -> backend chosen last

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        allowed = eligible(req.model, backends, exclude)
        if not isinstance(allowed, list):
            return allowed
        order = [b.name for b in backends]
        last = self._last.get(req.model)
        start = order.index(last) + 1 if last in order else 0
        names = {b.name for b in allowed}  # non-empty, a subset of ``order``
        name = next(n for n in order[start:] + order[:start] if n in names)
        self._last[req.model] = name
        return Dispatch(name, "round_robin")


def make_round_robin(
    params: RoundRobinParams, backends: Sequence[BackendInfo], profiles: Mapping[str, object]
) -> RoundRobin:
    return RoundRobin()
