"""route(): the ticket first, then LP by mode; the held EDF queue and its late binding."""

from __future__ import annotations

from asc_world import (
    SLO_1S,
    LinearProfile,
    StubPredictor,
    World,
    disp,
    info,
    lp_hp,
    names,
    request,
    with_params,
)

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.decisions import Dispatch, Hold, Reject
from ascendra_proxy.core.policies.ascendra import AscendraParams
from ascendra_proxy.core.slo import SLO

CALM = StubPredictor({"lp0": 0.05, "lp1": 0.05, "hp0": 0.05})  # nothing ever at risk


def busy_hp(w: World) -> None:
    """Occupy HP with 128 started requests so it grants no ticket (running >= 256/2)."""
    for i in range(128):
        r = request(f"hp-busy{i}", arrival=-10.0, prompt=10, max_tokens=10_000)
        w.reqs[r.id] = r
        r.on_dispatch(-10.0, "hp0")
        r.on_tokens(-9.0, 1)


def full_world(params: AscendraParams | None = None) -> World:
    """HP grants no ticket and both LPs are at their queue cap (three 1500-token prompts
    each, none started): the next request is held."""
    w = World(lp_hp(), params=params or AscendraParams(), predictor=CALM)
    busy_hp(w)
    for i in range(6):
        w.arrive(request(f"fill{i}", arrival=0.0, prompt=1500))
    return w


def test_idle_hp_takes_a_fresh_request_by_ticket_with_a_deadline_priority() -> None:
    w = World(lp_hp())
    d = w.arrive(request("a", arrival=5.0, prompt=1000))
    assert isinstance(d, Dispatch)
    assert (d.backend, d.reason) == ("hp0", "hp_ticket")
    # epoch = floor(first now) = 5 s; latest start = 6.0 - est_prefill(1000 tokens)
    est = LinearProfile().step_time(1000, 0, 0, 0)
    assert d.priority == round((1.0 - est) * 1000)


def test_busy_hp_sends_fresh_requests_to_the_least_queued_lp_then_holds() -> None:
    w = World(lp_hp(), predictor=CALM)
    busy_hp(w)
    got = [w.arrive(request(f"r{i}", arrival=0.01 * i, prompt=1500)) for i in range(7)]
    assert [(d.backend, d.reason) for d in got[:6] if isinstance(d, Dispatch)] == [
        ("lp0", "lp_room"),
        ("lp1", "lp_room"),
        ("lp0", "lp_room"),
        ("lp1", "lp_room"),
        ("lp0", "lp_room"),
        ("lp1", "lp_room"),
    ]  # 2 steps x 2048 tokens of room per LP: three 1500-token prompts each
    assert isinstance(got[6], Hold) and got[6].reason == "held_edf"
    assert w.policy.held_ids() == ["r6"]
    # the driver may ask again: still held, nothing changes
    again = w.policy.route(w.reqs["r6"], w.snapshots(), 0.2)
    assert isinstance(again, Hold)
    assert w.policy.held_ids() == ["r6"]


def test_held_queue_is_edf_by_latest_start_not_arrival() -> None:
    w = full_world()
    loose = SLO(ttft_s=5.0, tbt_s=0.15)
    tight = SLO(ttft_s=0.5, tbt_s=0.15)
    w.arrive(request("loose", arrival=0.10, slo=loose))
    w.arrive(request("normal", arrival=0.11, slo=SLO_1S))
    w.arrive(request("tight", arrival=0.12, slo=tight))
    w.arrive(request("normal-long", arrival=0.11, slo=SLO_1S, prompt=6000))
    # latest start = deadline - est_prefill: a long prompt must start earlier
    assert w.policy.held_ids() == ["tight", "normal-long", "normal", "loose"]


def test_tick_binds_held_requests_in_edf_order_when_room_frees() -> None:
    w = full_world()
    w.arrive(request("late", arrival=0.2, slo=SLO(2.0, 0.15), prompt=1500))
    w.arrive(request("early", arrival=0.3, slo=SLO(0.5, 0.15), prompt=1500))
    assert w.tick(0.31) == []  # no room: nothing moves
    w.reqs["fill0"].on_tokens(0.4, 1)  # lp0 starts one: 1500 tokens of room
    acts = w.tick(0.41)
    assert names(acts) == [("assign", "early", "lp0")]
    assert disp(acts[0]).reason == "lp_room"
    assert w.policy.held_ids() == ["late"]


def test_held_requests_past_their_latest_start_are_bound_last() -> None:
    w = full_world()
    w.arrive(request("late", arrival=0.0, prompt=1500))  # latest start ~0.93 s
    w.arrive(request("ontime", arrival=0.5, prompt=1500))  # latest start ~1.43 s
    assert w.policy.held_ids() == ["late", "ontime"]  # EDF order
    w.reqs["fill0"].on_tokens(1.0, 1)  # room for one 1500-token prompt on lp0
    acts = w.tick(1.0)  # "late" can no longer start in time: "ontime" goes first
    assert names(acts) == [("assign", "ontime", "lp0")]


def test_papers_lp_order_serves_infeasible_first() -> None:
    w = full_world(with_params(lp_infeasible_last=False))
    w.arrive(request("late", arrival=0.0, prompt=1500))
    w.arrive(request("ontime", arrival=0.5, prompt=1500))
    w.reqs["fill0"].on_tokens(1.0, 1)
    assert names(w.tick(1.0)) == [("assign", "late", "lp0")]


def test_a_freed_ticket_goes_to_the_held_head_not_to_a_newcomer() -> None:
    w = full_world()
    w.arrive(request("waiting", arrival=0.1))
    for i in range(100):  # HP drops below half its sequence limit
        w.finish(f"hp-busy{i}", 0.5)
    d = w.arrive(request("newcomer", arrival=0.5))
    assert isinstance(d, Hold)  # the queue is not empty: no jumping it
    acts = w.tick(0.52)
    assert names(acts)[0] == ("assign", "waiting", "hp0")
    assert disp(acts[0]).reason == "hp_ticket"


def test_engine_priority_mode_dispatches_at_once_with_deadline_priorities() -> None:
    w = World(lp_hp(), params=with_params(lp_ordering="engine_priority"), predictor=CALM)
    busy_hp(w)
    got = [w.arrive(request(f"r{i}", arrival=1.0 + 0.01 * i, prompt=1500)) for i in range(10)]
    assert all(isinstance(d, Dispatch) and d.reason == "lp_priority" for d in got)
    prios = [p for d in got if isinstance(d, Dispatch) and (p := d.priority) is not None]
    assert prios == sorted(prios) and len(set(prios)) == 10  # later deadline, larger number
    assert w.policy.held_ids() == []


def test_fcfs_engines_get_no_priority_field() -> None:
    w = World([info("lp0", Role.LP, priority=False), info("hp0", Role.HP, priority=False)])
    d = w.arrive(request("a"))
    assert isinstance(d, Dispatch) and d.priority is None


def test_without_lp_backends_hp_takes_the_request() -> None:
    w = World([info("hp0", Role.HP, max_num_seqs=2)])
    w.arrive(request("a"))
    w.arrive(request("b"))
    d = w.arrive(request("c"))
    assert isinstance(d, Dispatch) and (d.backend, d.reason) == ("hp0", "no_lp_backend")


def test_unknown_model_unhealthy_and_excluded_backends() -> None:
    w = World(lp_hp())
    d = w.arrive(request("x", model="other"))
    assert isinstance(d, Reject) and d.status == 404
    w.healthy = {"lp0": False, "lp1": False, "hp0": False}
    d = w.arrive(request("y"))
    assert isinstance(d, Reject) and d.status == 503
    w.healthy = {}
    busy_hp(w)
    r = request("z", arrival=0.0)
    w.reqs[r.id] = r
    d = w.policy.route(r, w.snapshots(), 0.0, exclude=frozenset({"lp0"}))
    assert isinstance(d, Dispatch) and d.backend == "lp1"


def test_on_finish_forgets_the_request_exactly() -> None:
    w = World(lp_hp(), predictor=CALM)
    busy_hp(w)
    for i in range(7):
        w.arrive(request(f"r{i}", prompt=1500))
    assert w.policy.status()["held"] == 1
    w.finish("r6", 1.0)  # a held request ends (client left)
    w.finish("r6", 1.0)  # a second finish changes nothing
    assert w.policy.status()["held"] == 0
    assert w.policy.status()["tracked"] == 6
