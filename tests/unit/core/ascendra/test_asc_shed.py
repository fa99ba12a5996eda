"""Admission in the tick: late everywhere + opted in -> Drop (429), else kept last."""

from __future__ import annotations

from asc_world import StubPredictor, World, busy, lp_hp, names, place, request

from ascendra_proxy.core.decisions import Drop, Hold
from ascendra_proxy.core.slo import SLO

REFUSE = SLO(1.0, 0.15, "refuse")
KEEP = SLO(1.0, 0.15, "keep")
LATE = StubPredictor({"lp0": 2.0, "lp1": 2.0, "hp0": 5.0})  # every first token after 1 s


def saturated() -> World:
    """Both LPs at their sequence limit, HP grants no ticket."""
    w = World(lp_hp(max_num_seqs=2), predictor=LATE)
    busy(w, "lp0", 2)
    busy(w, "lp1", 2)
    busy(w, "hp0", 1)
    return w


def drops(actions: object) -> list[Drop]:
    return [a for a in actions if isinstance(a, Drop)]  # type: ignore[attr-defined]


def test_a_held_request_late_everywhere_of_a_refusing_class_is_dropped_with_retry_after() -> None:
    w = saturated()
    assert isinstance(w.arrive(request("r", arrival=0.0, slo=REFUSE)), Hold)
    got = drops(w.tick(0.02))
    assert [d.request_id for d in got] == ["r"]
    rej = got[0].reject
    assert (rej.status, rej.code, rej.reason) == (429, "deadline_unreachable", "shed")
    assert rej.retry_after_s == 2  # the best predicted wait (2.0 s on LP), in whole seconds
    assert w.policy.held_ids() == []


def test_a_class_that_did_not_opt_in_stays_held() -> None:
    w = saturated()
    w.arrive(request("k", arrival=0.0, slo=KEEP))
    assert drops(w.tick(0.02)) == []
    assert w.policy.held_ids() == ["k"]


def test_a_request_that_can_still_make_it_is_never_dropped() -> None:
    w = World(lp_hp(max_num_seqs=2), predictor=StubPredictor({"lp0": 0.3, "lp1": 0.3}))
    busy(w, "lp0", 2)
    busy(w, "lp1", 2)
    busy(w, "hp0", 1)
    w.arrive(request("ok", arrival=0.0, slo=REFUSE))
    assert drops(w.tick(0.02)) == []


def test_a_not_started_request_on_lp_is_dropped_too() -> None:
    w = saturated()
    place(w, request("q", arrival=0.0, slo=REFUSE), "lp0", 0.0)
    got = drops(w.tick(0.02))
    assert [d.request_id for d in got] == ["q"]


def test_never_refused_while_an_engine_is_idle_the_idle_hp_takes_it() -> None:
    w = saturated()
    w.arrive(request("r", arrival=0.0, slo=REFUSE))
    w.finish("hp0-busy0", 0.01)  # HP is idle now (but predicted late: 5 s)
    actions = w.tick(0.02)
    assert drops(actions) == []
    assert names(actions) == [("assign", "r", "hp0")]
