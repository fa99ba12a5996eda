"""The offload rule at its margin, HP ordering of offloads, and HP choice by prefix hit."""

from __future__ import annotations

from dataclasses import replace

import pytest
from asc_world import (
    StubPredictor,
    World,
    disp,
    info,
    lp_hp,
    names,
    place,
    request,
    with_params,
)

from ascendra_proxy.core.backend import Role
from ascendra_proxy.core.deadline import INFEASIBLE_PRIORITY_OFFSET
from ascendra_proxy.core.decisions import Move
from ascendra_proxy.core.policies.ascendra.params import AscendraParams, OffloadParams
from ascendra_proxy.core.slo import SLO


@pytest.mark.parametrize(
    ("now", "lp_ttft", "offload"),
    [
        (0.5, 0.19, False),  # 0.5 + 0.19 + Δ 0.3 = 0.99 <= 1.0
        (0.5, 0.21, True),  # 1.01 > 1.0
        (0.0, 0.69, False),
        (0.0, 0.71, True),
        (0.9, 0.0, True),  # waited alone exhausts the margin
    ],
)
def test_predicted_rule_at_the_margin(now: float, lp_ttft: float, offload: bool) -> None:
    stub = StubPredictor({"lp0": lp_ttft, "lp1": lp_ttft, "hp0": 0.05})
    w = World(lp_hp(), predictor=stub)
    place(w, request("a", arrival=0.0), "lp0", 0.0)
    acts = w.tick(now)
    assert (names(acts) == [("offload", "a", "hp0")]) is offload
    if offload:
        assert disp(acts[0]).reason == "offload_ttft"
        assert "from=lp0" in disp(acts[0]).detail


@pytest.mark.parametrize(("now", "offload"), [(0.18, False), (0.19, True)])
def test_paper_rule_uses_max_of_step_and_est_prefill_with_delta(now: float, offload: bool) -> None:
    # Δ = 0.7 (no cap); T̂(lp0) = 10 ms + 0.05 ms x 2048 = 112.4 ms > est_prefill (60 ms):
    # offload once now + 0.1124 + 0.7 > 1.0, i.e. after 0.1876 s.
    p = with_params(offload=OffloadParams(rule="paper", margin_max_frac=1.0))
    w = World(lp_hp(), params=p)
    place(w, request("a", arrival=0.0), "lp0", 0.0)
    assert (names(w.tick(now)) == [("offload", "a", "hp0")]) is offload


def test_held_requests_are_offloaded_from_the_queue_without_an_abort() -> None:
    stub = StubPredictor({"lp0": 0.9, "lp1": 0.9, "hp0": 0.05})
    w = World(lp_hp(), params=with_params(lp_queue_steps=0.0001), predictor=stub)
    for i in range(2):  # fill both LPs so the next one is held
        place(w, request(f"f{i}", arrival=0.0), f"lp{i}", 0.0)
    for i in range(130):  # and HP grants no ticket
        place(w, request(f"h{i}", arrival=0.0, prompt=1), "hp0", 0.0).on_tokens(0.01, 1)
    w.arrive(request("q", arrival=0.02))
    assert w.policy.held_ids() == ["q"]
    acts = w.tick(0.05)
    assert names(acts) == [("offload", n, "hp0") for n in ("f0", "f1", "q")]
    assert "from=queue" in disp(acts[2]).detail
    assert w.policy.held_ids() == []


def infeasible_too() -> AscendraParams:
    """The paper's behaviour: offload even requests HP cannot save (ordered last there)."""
    base = AscendraParams()
    return replace(base, offload=replace(base.offload, infeasible=True))


def test_offloads_are_ordered_feasible_by_urgency_then_infeasible_last() -> None:
    stub = StubPredictor({"lp0": 5.0, "lp1": 5.0, "hp0": 0.4})
    w = World(lp_hp(), params=infeasible_too(), predictor=stub)
    slo = SLO(1.0, 0.15)
    place(w, request("later", arrival=0.3, slo=slo), "lp0", 0.3)
    place(w, request("doomed", arrival=0.0, slo=slo), "lp0", 0.3)  # 0.7 + 0.4 > 1.0 on HP
    place(w, request("sooner", arrival=0.2, slo=slo), "lp1", 0.3)
    acts = w.tick(0.7)
    assert [n[1] for n in names(acts)] == ["sooner", "later", "doomed"]
    prios = [p for a in acts if isinstance(a, Move) and (p := a.dispatch.priority) is not None]
    assert prios[0] < prios[1] < INFEASIBLE_PRIORITY_OFFSET <= prios[2]
    assert "infeasible" in disp(acts[2]).detail


def test_by_default_only_requests_hp_can_save_are_offloaded() -> None:
    stub = StubPredictor({"lp0": 5.0, "lp1": 5.0, "hp0": 0.4})
    w = World(lp_hp(), predictor=stub)
    place(w, request("doomed", arrival=0.0), "lp0", 0.3)
    place(w, request("fine", arrival=0.3), "lp0", 0.3)
    assert [n[1] for n in names(w.tick(0.7))] == ["fine"]


def test_requests_on_hp_and_offloaded_ones_are_never_offloaded() -> None:
    stub = StubPredictor({"lp0": 5.0, "lp1": 5.0, "hp0": 5.0})
    w = World(lp_hp(), params=infeasible_too(), predictor=stub)
    place(w, request("on-hp", arrival=0.0), "hp0", 0.0)
    place(w, request("a", arrival=0.0), "lp0", 0.0)
    assert names(w.tick(0.1)) == [("offload", "a", "hp0")]
    assert names(w.tick(0.2)) == []  # a is on HP now; nothing moves again


def test_offload_goes_to_the_hp_with_the_prompt_prefix() -> None:
    w = World([info("lp0", Role.LP), info("hp0", Role.HP), info("hp1", Role.HP)])
    prefix = tuple(range(62))  # 62 blocks of 16 = 992 of its 1000 tokens
    place(w, request("busy", arrival=0.0, prompt=16), "hp0", 0.0).on_tokens(0.01, 1)
    seed = request("seed", arrival=0.0, prefix=prefix)
    w.reqs[seed.id] = seed
    d = w.policy.route(seed, w.snapshots(), 0.0)  # ticket: hp1 (fewer in flight)
    assert disp(d).backend == "hp1"
    seed.on_dispatch(0.0, "hp1")
    seed.on_tokens(0.1, 1)
    same = place(w, request("same", arrival=0.0, prefix=prefix), "lp0", 0.1)
    other = place(w, request("other", arrival=0.0, prefix=tuple(range(100, 162))), "lp0", 0.1)
    acts = w.tick(0.9)
    where = {n[1]: n[2] for n in names(acts)}
    assert where["same"] == "hp1"
    assert where["other"] == "hp0"
    del same, other
