"""Adaptive roles [ours]: move one backend at a time between LP and HP, with hysteresis.

Theory of operation.  Roles are proxy-side labels, so a backend can change role at run
time.  Per model (only backends serving the same model can stand in for each other), at
every tick, with ``hp_util`` the mean over healthy HP backends of
``running / (ticket.running_frac * max_num_seqs)`` (1.0: HP stops granting tickets),
``lp_util`` the LP pool's running plus held requests over its ``max_num_seqs``, and
``rate`` the offloads per second per HP backend over the last ``window_s``:

* **grow HP** when ``hp_util >= grow_hp_util`` and ``rate >= grow_offload_rate`` and more
  than ``min_lp`` LP backends remain: the LP backend with the fewest in-flight requests
  starts draining toward HP;
* **shrink HP** when ``hp_util <= shrink_hp_util`` and ``rate <= shrink_offload_rate`` and
  ``lp_util >= shrink_lp_util`` and more than ``min_hp`` HP backends remain: the least
  loaded HP backend starts draining toward LP.

Hysteresis comes three ways: the grow and shrink thresholds are far apart, a condition must
hold at every tick for ``hold_s`` (a single tick without it restarts the clock), and after
a change takes effect the model's roles stay put for ``cooldown_s``.  *Draining*: the
backend takes no new work of either role; it switches once no request the proxy sent waits
on it (and, toward HP, it runs below the ticket threshold so it is useful at once), or
after ``drain_timeout_s`` regardless.  Its streams continue where they are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.policies.ascendra.actions import Reason, SetRole
from ascendra_proxy.core.policies.ascendra.params import AdaptiveRoleParams, TicketParams
from ascendra_proxy.core.policies.ascendra.view import BackendState

__all__ = ["RoleController"]

_MAX_EVENTS = 100_000  # offload timestamps kept per model (bounds memory at any rate)


@dataclass(frozen=True, slots=True)
class _Drain:
    target: Role
    since: float


class RoleController:
    def __init__(self, p: AdaptiveRoleParams, ticket: TicketParams, max_age_s: float) -> None:
        self._p = p
        self._ticket = ticket
        self._max_age = max_age_s
        self._drains: dict[str, _Drain] = {}
        self._offloads: dict[str, deque[float]] = {}
        self._grow_since: dict[str, float] = {}
        self._shrink_since: dict[str, float] = {}
        self._last_change: dict[str, float] = {}

    @property
    def draining(self) -> dict[str, Role]:
        """Backends draining, with the role they will take."""
        return {name: d.target for name, d in self._drains.items()}

    def note_offload(self, now: float, model: str) -> None:
        q = self._offloads.setdefault(model, deque(maxlen=_MAX_EVENTS))
        q.append(now)

    def offload_rate(self, now: float, model: str) -> float:
        q = self._offloads.get(model)
        if not q:
            return 0.0
        while q and q[0] < now - self._p.window_s:
            q.popleft()
        return len(q) / self._p.window_s

    def review(
        self,
        now: float,
        states: Mapping[str, BackendState],
        roles: dict[str, Role],
        held_by_model: Mapping[str, int],
    ) -> list[SetRole]:
        """Finish drains, then maybe start one per model; updates ``roles`` and ``states``."""
        out = self._finish_drains(now, states, roles)
        groups: dict[str, list[BackendState]] = {}
        for b in states.values():
            groups.setdefault(b.snap.model, []).append(b)
        for model, group in groups.items():
            change = self._decide(now, model, group, held_by_model.get(model, 0))
            if change is not None:
                out.append(change)
        return out

    def _finish_drains(
        self, now: float, states: Mapping[str, BackendState], roles: dict[str, Role]
    ) -> list[SetRole]:
        out = []
        for name, d in list(self._drains.items()):
            b = states.get(name)
            if b is None:
                continue
            limit = self._ticket.running_frac * b.max_num_seqs
            drained = b.unstarted == 0 and (d.target is Role.LP or b.running(self._max_age) < limit)
            timed_out = now - d.since >= self._p.drain_timeout_s
            if not (drained or timed_out):
                continue
            del self._drains[name]
            roles[name] = d.target
            b.role, b.draining = d.target, False
            self._last_change[b.snap.model] = now
            reason = Reason.ROLE_DRAINED if drained else Reason.ROLE_DRAIN_TIMEOUT
            out.append(SetRole(name, d.target, False, reason, f"after {now - d.since:.1f}s"))
        return out

    def _decide(
        self, now: float, model: str, group: list[BackendState], held: int
    ) -> SetRole | None:
        p = self._p
        if any(b.name in self._drains for b in group):
            return None
        last = self._last_change.get(model)
        if last is not None and now - last < p.cooldown_s:
            self._grow_since.pop(model, None)
            self._shrink_since.pop(model, None)
            return None
        lp = [b for b in group if b.is_lp and b.snap.healthy]
        hp = [b for b in group if b.is_hp and b.snap.healthy]
        if not lp or not hp:
            return None
        age = self._max_age
        hp_util = sum(
            b.running(age) / (self._ticket.running_frac * b.max_num_seqs) for b in hp
        ) / len(hp)
        lp_util = (sum(b.running(age) for b in lp) + held) / sum(b.max_num_seqs for b in lp)
        rate = self.offload_rate(now, model) / len(hp)
        grow = hp_util >= p.grow_hp_util and rate >= p.grow_offload_rate and len(lp) > p.min_lp
        shrink = (
            hp_util <= p.shrink_hp_util
            and rate <= p.shrink_offload_rate
            and lp_util >= p.shrink_lp_util
            and len(hp) > p.min_hp
        )
        detail = f"hp_util={hp_util:.2f} lp_util={lp_util:.2f} offloads/s/hp={rate:.2f}"
        if _sustained(self._grow_since, model, grow, now, p.hold_s):
            return self._start(now, model, _least_busy(lp), Role.HP, Reason.ROLE_GROW_HP, detail)
        if _sustained(self._shrink_since, model, shrink, now, p.hold_s):
            return self._start(now, model, _least_busy(hp), Role.LP, Reason.ROLE_SHRINK_HP, detail)
        return None

    def _start(
        self, now: float, model: str, b: BackendState, target: Role, reason: str, detail: str
    ) -> SetRole:
        self._drains[b.name] = _Drain(target, now)
        self._grow_since.pop(model, None)
        self._shrink_since.pop(model, None)
        b.draining = True
        return SetRole(b.name, target, True, reason, detail)


def _sustained(since: dict[str, float], key: str, cond: bool, now: float, hold_s: float) -> bool:
    if not cond:
        since.pop(key, None)
        return False
    start = since.setdefault(key, now)
    return now - start >= hold_s


def _least_busy(bs: list[BackendState]) -> BackendState:
    best = bs[0]
    for b in bs[1:]:
        if b.inflight < best.inflight:
            best = b
    return best
