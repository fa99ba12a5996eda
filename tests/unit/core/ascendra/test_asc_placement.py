"""LP placement: prefix-aware choice, room in tokens to prefill, Moore-Hodgson order."""

from __future__ import annotations

from asc_world import (
    StubPredictor,
    World,
    busy,
    lp_hp,
    names,
    request,
    with_params,
)

from ascendra_proxy.core.decisions import Dispatch, Hold
from ascendra_proxy.core.slo import SLO

P = tuple(range(124))  # 124 blocks of 16 = 1,984 tokens of shared prefix
Q = tuple(range(1000, 1124))
CALM = StubPredictor({"lp0": 0.05, "lp1": 0.05, "hp0": 0.05})


def seeded_world(**params: object) -> World:
    """HP grants no ticket; lp0 has served prefix P and lp1 prefix Q (both finished)."""
    w = World(lp_hp(), params=with_params(**params), predictor=CALM)
    busy(w, "hp0", 128)
    for rid, prefix, where in (("seed-p", P, "lp0"), ("seed-q", Q, "lp1")):
        d = w.arrive(request(rid, arrival=0.0, prompt=2000, prefix=prefix))
        assert isinstance(d, Dispatch) and d.backend == where
    for rid in ("seed-p", "seed-q"):
        w.reqs[rid].on_tokens(0.05, 1)
        w.finish(rid, 0.06)
    return w


def test_a_request_follows_the_lp_that_holds_its_prefix() -> None:
    w = seeded_world()
    got = [w.arrive(request(f"q{i}", arrival=0.1, prompt=2000, prefix=Q)) for i in range(2)]
    got += [w.arrive(request("p0", arrival=0.1, prompt=2000, prefix=P))]
    # least-queued alone would alternate lp0, lp1, lp0
    assert [d.backend for d in got if isinstance(d, Dispatch)] == ["lp1", "lp1", "lp0"]


def test_lp_room_counts_only_the_tokens_to_prefill() -> None:
    # one step of room (2,048 tokens): four 2,000-token prompts that share 1,984 cached
    # tokens need 64 tokens of prefill together, so all fit on the LP holding the prefix
    w = seeded_world(lp_queue_steps=1.0)
    got = [w.arrive(request(f"p{i}", arrival=0.1, prompt=2000, prefix=P)) for i in range(4)]
    assert [d.backend for d in got if isinstance(d, Dispatch)] == ["lp0"] * 4


def test_queued_work_outweighs_a_prefix_hit() -> None:
    # lp0 holds the prefix but has a long uncached queue: the miss on lp1 costs less
    w = seeded_world(lp_queue_steps=4.0)
    for i in range(3):
        d = w.arrive(request(f"x{i}", arrival=0.1, prompt=2000))
        assert isinstance(d, Dispatch)
    # x0 -> lp0, x1 -> lp1, x2 -> lp0: lp0 queues 4,000 uncached tokens, lp1 2,000
    d = w.arrive(request("p", arrival=0.1, prompt=2000, prefix=P))
    assert isinstance(d, Dispatch) and d.backend == "lp1"


def test_late_binding_places_held_requests_by_prefix() -> None:
    w = seeded_world(lp_queue_steps=1.0)
    for i in range(2):  # fill both LPs' room with uncached work
        w.arrive(request(f"fill{i}", arrival=0.1, prompt=2100))
    held = w.arrive(request("q", arrival=0.2, prompt=2000, prefix=Q))
    assert isinstance(held, Hold)
    for i in range(2):  # both fills start: room opens on both LPs
        w.reqs[f"fill{i}"].on_tokens(0.3, 1)
    assert names(w.tick(0.31)) == [("assign", "q", "lp1")]


def moore_hodgson_world(moore_hodgson: bool) -> World:
    """Both LPs at their sequence limit and HP busy; three held requests in EDF order:
    a long one that is on time alone, then two short ones it would make late."""
    predictor = StubPredictor({"lp0": 0.3, "lp1": 0.3, "hp0": 5.0}, per_ahead_s=0.0004)
    params = with_params(lp_moore_hodgson=moore_hodgson)
    w = World(lp_hp(max_num_seqs=2), params=params, predictor=predictor)
    busy(w, "hp0", 1)
    busy(w, "lp0", 2)
    busy(w, "lp1", 2)
    w.arrive(request("long", arrival=0.0, prompt=1500, slo=SLO(0.5, 0.15)))
    w.arrive(request("short1", arrival=0.0, prompt=100, slo=SLO(0.6, 0.15)))
    w.arrive(request("short2", arrival=0.0, prompt=100, slo=SLO(0.62, 0.15)))
    assert w.policy.held_ids() == ["long", "short1", "short2"]
    w.tick(0.01)  # nothing has room yet
    w.finish("lp0-busy0", 0.02)  # one sequence slot opens on lp0
    return w


def test_moore_hodgson_sacrifices_the_long_request_that_makes_two_late() -> None:
    assert names(moore_hodgson_world(True).tick(0.03)) == [("assign", "short1", "lp0")]


def test_without_moore_hodgson_the_edf_head_goes_first() -> None:
    assert names(moore_hodgson_world(False).tick(0.03)) == [("assign", "long", "lp0")]
