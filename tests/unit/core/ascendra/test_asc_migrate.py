"""Mid-stream migration: move when the mean TBT is heading over and moving pays; failover."""

from __future__ import annotations

from dataclasses import replace

import pytest
from asc_world import StubPredictor, World, disp, lp_hp, names, place, request

from ascendra_proxy.core.policies.ascendra.params import AscendraParams, MigrationParams

H = 32  # horizon tokens (the default)


def streaming(w: World, rid: str, backend: str = "lp0", gap: float = 0.1) -> None:
    """A stream on ``backend``: first token at 0.1 s, then one every ``gap`` s up to 1.1 s
    (11 tokens, mean TBT 0.1 s, by default)."""
    r = place(w, request(rid, arrival=0.0, max_tokens=200), backend, 0.0)
    for i in range(round(1.0 / gap) + 1):
        r.on_tokens(0.1 + gap * i, 1)


def world(lp_gap: float, hp_ttft: float, **mig: object) -> World:
    """LP decodes at ``lp_gap`` s/token; HP re-prefills in ``hp_ttft`` s, then 20 ms/token."""
    base = AscendraParams()
    params = replace(base, migration=replace(base.migration, **mig))  # type: ignore[arg-type]
    stub = StubPredictor(
        {"lp0": 5.0, "lp1": 5.0, "hp0": hp_ttft},
        next_k={"lp0": H * lp_gap, "lp1": H * lp_gap, "hp0": H * 0.02},
    )
    return World(lp_hp(), params=params, predictor=stub)


@pytest.mark.parametrize(
    ("lp_gap", "hp_ttft", "mig", "moves"),
    [
        (0.30, 0.2, {}, True),  # stay: mean -> 0.245 s > 0.15; move: 0.044 s
        (0.05, 0.2, {}, False),  # stay is fine: mean -> 0.061 s
        (0.30, 10.0, {}, False),  # moving cannot rescue it (re-prefill too slow)
        (0.30, 0.2, {"min_benefit_s": 5.0}, True),  # gain 8.47 s > 5 s
        (0.30, 0.2, {"min_benefit_s": 9.0}, False),  # gain below the required benefit
        (0.30, 0.2, {"max_per_request": 0}, False),
        (0.30, 0.2, {"enabled": False}, False),
        (0.30, 0.2, {"min_remaining_tokens": 190}, False),  # 189 tokens left
    ],
)
def test_migrate_or_not(lp_gap: float, hp_ttft: float, mig: dict[str, object], moves: bool) -> None:
    w = world(lp_gap, hp_ttft, **mig)
    streaming(w, "s")
    acts = w.tick(1.1)
    assert (names(acts) == [("migrate", "s", "hp0")]) is moves
    if moves:
        d = disp(acts[0])
        assert d.reason == "migrate_tbt" and "from=lp0" in d.detail
        assert d.priority == 100  # priority "now" in ms: epoch = floor(first now) = 1 s


def test_hp_that_is_too_busy_takes_no_migration() -> None:
    w = world(0.30, 0.2)
    for i in range(192):  # 0.75 x 256
        place(w, request(f"h{i}", arrival=0.0, prompt=1), "hp0", 0.0).on_tokens(0.05, 1)
    streaming(w, "s")
    assert names(w.tick(1.1)) == []


def test_at_most_max_per_tick_the_worst_first() -> None:
    w = world(0.30, 0.2, max_per_tick=2)
    streaming(w, "a")
    streaming(w, "b", gap=0.25)  # b was slower so far: its projected mean is the worst
    streaming(w, "c")
    acts = w.tick(1.1)
    moved = [n[1] for n in names(acts)]
    assert len(moved) == 2 and moved[0] == "b"


def test_streams_and_waiting_requests_leave_an_unhealthy_backend() -> None:
    w = world(0.01, 0.2)  # staying would be fast: only the failure moves them
    streaming(w, "s")
    place(w, request("waiting", arrival=1.0), "lp0", 1.0)
    w.healthy["lp0"] = False
    acts = w.tick(1.1)
    got = {(n[0], n[1]) for n in names(acts)}
    assert got == {("migrate", "s"), ("offload", "waiting")}
    reasons = {n[1]: disp(a).reason for n, a in zip(names(acts), acts, strict=True)}
    assert reasons == {"s": "migrate_backend_down", "waiting": "offload_backend_down"}
    assert all(disp(a).backend != "lp0" for a in acts)


def test_a_failed_stream_rerouted_by_the_driver_continues_elsewhere() -> None:
    w = world(0.30, 0.2)
    streaming(w, "s")
    d = w.policy.route(w.reqs["s"], w.snapshots(), 1.2, exclude=frozenset({"lp0"}))
    assert disp(d).reason == "failover" and disp(d).backend in ("lp1", "hp0")


def test_migration_params_reject_nothing_by_default() -> None:
    assert MigrationParams().max_per_request == 1
