"""Tight mean-TBT classes go to the HP backend whose steps meet them (tbt_placement)."""

from __future__ import annotations

from asc_world import LinearProfile, StubPredictor, World, facts, lp_hp, request, with_params

from ascendra_proxy.core.decisions import Dispatch
from ascendra_proxy.core.policies.ascendra import AscendraParams, AscendraPolicy
from ascendra_proxy.core.slo import SLO

# LinearProfile: a full mixed step is 10 ms + 0.05 ms per token: 112 ms with LP's 2,048-token
# budget, 36 ms with HP's 512
TIGHT = SLO(1.0, 0.05)
LOOSE = SLO(1.0, 0.15)
CALM = StubPredictor({"lp0": 0.05, "lp1": 0.05, "hp0": 0.05})


def small_hp_world(params: AscendraParams | None = None) -> World:
    infos = lp_hp()
    w = World(infos, params=params or AscendraParams(), predictor=CALM)
    budgets = {"lp0": 2048, "lp1": 2048, "hp0": 512}
    w.policy = AscendraPolicy(
        w.params,
        infos,
        step_models={"lin": LinearProfile()},
        facts={b.name: facts(budget=budgets[b.name]) for b in infos},
        predictor=CALM,
    )
    for i in range(128):  # HP grants no ticket (running >= 256 / 2)
        r = request(f"hp-busy{i}", arrival=-10.0, prompt=10, max_tokens=10_000)
        w.reqs[r.id] = r
        r.on_dispatch(-10.0, "hp0")
        r.on_tokens(-9.0, 1)
    return w


def test_a_tight_tbt_request_goes_to_the_hp_whose_steps_meet_it() -> None:
    w = small_hp_world()
    d = w.arrive(request("tight", arrival=0.0, slo=TIGHT))
    assert isinstance(d, Dispatch) and (d.backend, d.reason) == ("hp0", "tbt_fit")
    loose = w.arrive(request("loose", arrival=0.0, slo=LOOSE))
    assert isinstance(loose, Dispatch) and loose.backend == "lp0"  # no ticket: LP


def test_without_tbt_placement_it_goes_where_the_other_rules_send_it() -> None:
    w = small_hp_world(with_params(tbt_placement=False))
    d = w.arrive(request("tight", arrival=0.0, slo=TIGHT))
    assert isinstance(d, Dispatch) and d.backend == "lp0"


def test_a_tight_request_goes_to_lp_when_the_fitting_hp_has_no_room() -> None:
    w = small_hp_world(with_params(lp_queue_steps=1.0))
    first = w.arrive(request("t0", arrival=0.0, prompt=600, slo=TIGHT))
    assert isinstance(first, Dispatch) and first.backend == "hp0"  # 600 > HP's 512 of room
    second = w.arrive(request("t1", arrival=0.01, prompt=600, slo=TIGHT))
    assert isinstance(second, Dispatch) and second.backend == "lp0"
