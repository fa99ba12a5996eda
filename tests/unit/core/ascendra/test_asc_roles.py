"""Adaptive roles: grow/shrink HP with hold time, cooldown and draining."""

from __future__ import annotations

from asc_world import World, facts, lp_hp, place, request, with_params

from ascendra_proxy.core.backend import BackendSnapshot, Role
from ascendra_proxy.core.decisions import Dispatch
from ascendra_proxy.core.policies.ascendra import SetRole
from ascendra_proxy.core.policies.ascendra.params import AdaptiveRoleParams, TicketParams
from ascendra_proxy.core.policies.ascendra.roles import RoleController
from ascendra_proxy.core.policies.ascendra.view import BackendState, build_states

P = AdaptiveRoleParams()  # hold 5 s, cooldown 30 s, drain timeout 30 s, window 10 s


class Cluster:
    """Backends with chosen loads; states rebuilt per review like the policy does."""

    def __init__(self, roles: dict[str, Role], p: AdaptiveRoleParams = P) -> None:
        self.roles = dict(roles)
        self.inflight = dict.fromkeys(roles, 0)
        self.queued = dict.fromkeys(roles, 0)
        self.ctl = RoleController(p, TicketParams(), max_age_s=2.0)

    def states(self) -> dict[str, BackendState]:
        snaps = [
            BackendSnapshot(
                name=n,
                pool="p",
                role=r,
                engine="vllm",
                model="m",
                healthy=True,
                inflight=self.inflight[n],
                queued_prompt_tokens=self.queued[n],
                scraped=None,
                max_num_seqs=100,
            )
            for n, r in self.roles.items()
        ]
        f = {n: facts(max_num_seqs=100) for n in self.roles}
        states = build_states(snaps, f, self.roles, self.ctl.draining)
        for b in states.values():
            b.unstarted = 1 if self.queued[b.name] else 0
        return states

    def review(self, now: float, held: int = 0) -> list[SetRole]:
        return self.ctl.review(now, self.states(), self.roles, {"m": held})

    def offloads(self, start: float, end: float, per_s: float) -> None:
        n = round((end - start) * per_s)
        for i in range(n):
            self.ctl.note_offload(start + i / per_s, "m")


def hot_hp() -> Cluster:
    c = Cluster({"lp0": Role.LP, "lp1": Role.LP, "hp0": Role.HP})
    c.inflight.update(lp0=30, lp1=20, hp0=45)  # hp util 45 / 50 = 0.9
    c.offloads(0.0, 30.0, 2.0)
    return c


def test_grow_hp_after_the_condition_held_for_hold_s() -> None:
    c = hot_hp()
    assert c.review(10.0) == []
    assert c.review(14.9) == []
    (change,) = c.review(15.0)
    assert (change.backend, change.role, change.draining) == ("lp1", Role.HP, True)
    assert change.reason == "role_grow_hp" and "hp_util=0.90" in change.detail
    assert c.roles["lp1"] is Role.LP  # not yet: it drains first


def test_a_break_in_the_condition_restarts_the_hold() -> None:
    c = hot_hp()
    assert c.review(10.0) == []
    c.inflight["hp0"] = 10
    assert c.review(12.0) == []  # condition broken
    c.inflight["hp0"] = 45
    assert c.review(13.0) == []
    assert c.review(17.9) == []
    assert len(c.review(18.0)) == 1


def test_drain_completes_then_cooldown_blocks_the_next_change() -> None:
    c = hot_hp()
    c.review(10.0)
    c.review(15.0)  # lp1 starts draining toward HP
    c.queued["lp1"] = 500  # a request still waits there
    assert c.review(16.0) == []
    c.queued["lp1"] = 0
    (done,) = c.review(17.0)
    assert (done.backend, done.role, done.draining, done.reason) == (
        "lp1",
        Role.HP,
        False,
        "role_drained",
    )
    assert c.roles["lp1"] is Role.HP
    # HP is still hot (two HP now, but add load) - nothing happens during the cooldown
    c.inflight.update(lp1=45)
    for t in (20.0, 30.0, 46.9):
        assert c.review(t) == []


def test_drain_times_out() -> None:
    c = hot_hp()
    c.review(10.0)
    c.review(15.0)
    c.queued["lp1"] = 500
    assert c.review(44.9) == []
    (done,) = c.review(45.0)
    assert done.reason == "role_drain_timeout" and c.roles["lp1"] is Role.HP


def test_never_below_min_lp() -> None:
    c = Cluster({"lp0": Role.LP, "hp0": Role.HP})
    c.inflight.update(lp0=30, hp0=45)
    c.offloads(0.0, 30.0, 2.0)
    for t in (10.0, 20.0, 30.0):
        assert c.review(t) == []


def test_shrink_hp_when_idle_and_lp_busy() -> None:
    c = Cluster({"lp0": Role.LP, "hp0": Role.HP, "hp1": Role.HP})
    c.inflight.update(lp0=80, hp0=5, hp1=2)
    assert c.review(100.0) == []
    (change,) = c.review(105.0)
    assert (change.backend, change.role, change.draining) == ("hp1", Role.LP, True)
    assert change.reason == "role_shrink_hp"
    (done,) = c.review(105.5)
    assert done.role is Role.LP and c.roles["hp1"] is Role.LP


def test_between_the_thresholds_nothing_changes() -> None:
    c = Cluster({"lp0": Role.LP, "lp1": Role.LP, "hp0": Role.HP, "hp1": Role.HP})
    c.inflight.update(lp0=80, lp1=80, hp0=25, hp1=25)  # hp util 0.5: in the band
    c.offloads(0.0, 100.0, 0.5)
    for t in range(10, 100, 5):
        assert c.review(float(t)) == []


def test_policy_in_adaptive_mode_emits_roles_and_stops_sending_to_a_draining_backend() -> None:
    p = with_params(roles="adaptive", adaptive=AdaptiveRoleParams(hold_s=0.0, cooldown_s=0.0))
    w = World(lp_hp(2, 2), params=p)

    def stream_on_lp(ids: range) -> None:
        for i in ids:
            r = request(f"r{i}", arrival=0.0, prompt=10, max_tokens=10_000)
            place(w, r, "lp0" if i % 2 else "lp1", 0.0).on_tokens(0.1, 1)

    stream_on_lp(range(90))  # LP busy (started), both HP idle, no offloads
    acts = w.tick(1.0)
    changes = [a for a in acts if isinstance(a, SetRole)]
    assert changes == []  # lp util 90 / 512 < 0.5: LP is not busy enough
    stream_on_lp(range(90, 400))
    acts = w.tick(2.0)
    changes = [a for a in acts if isinstance(a, SetRole)]
    assert [(c.backend, c.role, c.draining) for c in changes] == [("hp0", Role.LP, True)]
    assert w.policy.status()["draining"] == {"hp0": "lp"}
    # fresh work avoids the draining backend (hp1 still grants tickets)
    d = w.arrive(request("new", arrival=2.0))
    assert isinstance(d, Dispatch) and d.backend == "hp1"
    acts = w.tick(2.1)
    assert [(c.backend, c.role, c.draining) for c in acts if isinstance(c, SetRole)] == [
        ("hp0", Role.LP, False)
    ]
    assert w.policy.roles()["hp0"] is Role.LP
