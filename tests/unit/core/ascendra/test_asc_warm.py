"""Warming: a one-token prefill on the HP an offload would use, when slack runs low."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from asc_world import StubPredictor, World, info, names, place, request

from ascendra_proxy.core.backend import Role, ScrapedLoad
from ascendra_proxy.core.deadline import PRIORITY_MAX
from ascendra_proxy.core.policies.ascendra import Warm
from ascendra_proxy.core.policies.ascendra.params import AscendraParams

PREFIX = tuple(range(62))  # 992 of 1000 prompt tokens in full blocks


def world(lp_ttft: float, enabled: bool = True, **kw: object) -> World:
    base = AscendraParams()
    params = replace(base, warming=replace(base.warming, enabled=enabled, **kw))  # type: ignore[arg-type]
    stub = StubPredictor({"lp0": lp_ttft, "hp0": 0.1, "hp1": 0.1}, per_cached_s=0.0001)
    infos = [info("lp0", Role.LP), info("hp0", Role.HP), info("hp1", Role.HP)]
    return World(infos, params=params, predictor=stub)


def warms(acts: Sequence[object]) -> list[tuple[str, str]]:
    return [(a.request_id, a.backend) for a in acts if isinstance(a, Warm)]


@pytest.mark.parametrize(
    ("lp_ttft", "expect"),
    [
        (0.20, "nothing"),  # slack 0.7 - Δ 0.3 = 0.4 >= lead 0.3
        (0.35, "warm"),  # slack - Δ = 0.25 < 0.3, but not at risk yet
        (0.65, "offload"),  # at risk: offloaded, not warmed
    ],
)
def test_warming_trigger(lp_ttft: float, expect: str) -> None:
    w = world(lp_ttft)
    place(w, request("a", arrival=0.0, prefix=PREFIX), "lp0", 0.0)
    acts = w.tick(0.1)
    got = "warm" if warms(acts) else ("offload" if names(acts) else "nothing")
    assert got == expect
    if got == "warm":
        assert isinstance(acts[0], Warm) and acts[0].reason == "warm_low_slack"
        assert acts[0].priority == PRIORITY_MAX  # behind every real request on that engine


def test_warm_once_and_the_offload_follows_the_warmed_prefix() -> None:
    w = world(0.35)
    place(w, request("a", arrival=0.0, prefix=PREFIX), "lp0", 0.0)
    assert warms(w.tick(0.1)) == [("a", "hp0")]
    assert warms(w.tick(0.12)) == []  # never twice
    assert isinstance(w.predictor, StubPredictor)
    w.predictor.ttft["hp1"] = 0.095  # hp1 is now a bit faster for an uncached prompt...
    acts = w.tick(0.5)  # ...but the offload goes where the prefix already is
    assert names(acts) == [("offload", "a", "hp0")]


@pytest.mark.parametrize(
    ("enabled", "prompt", "prefix", "kw"),
    [
        (False, 1000, PREFIX, {}),  # warming off (the default)
        (True, 200, PREFIX[:12], {}),  # short prompts are cheap to prefill anyway
        (True, 1000, (), {}),  # no block hashes from the driver: nothing to track
        (True, 1000, PREFIX, {"lead_s": 0.0}),
    ],
)
def test_no_warm(
    enabled: bool, prompt: int, prefix: tuple[int, ...], kw: dict[str, object]
) -> None:
    w = world(0.35, enabled=enabled, **kw)
    place(w, request("a", arrival=0.0, prompt=prompt, prefix=prefix), "lp0", 0.0)
    assert warms(w.tick(0.1)) == []


def test_at_most_max_per_tick() -> None:
    w = world(0.35, max_per_tick=2)
    for i in range(4):
        place(
            w, request(f"r{i}", arrival=0.0, prefix=tuple(range(i * 100, i * 100 + 62))), "lp0", 0.0
        )
    assert len(warms(w.tick(0.1))) == 2
    assert len(warms(w.tick(0.12))) == 2


@pytest.mark.parametrize("busy", ["proxy_unstarted", "engine_waiting"])
def test_no_warm_to_an_hp_with_a_queue(busy: str) -> None:
    """A warm-up at the lowest priority would sit in that queue (blocking HP's ticket) or
    take prefill time from the work queued there."""
    w = world(0.35)
    for hp in ("hp0", "hp1"):
        if busy == "proxy_unstarted":
            place(w, request(f"q-{hp}", arrival=0.0, prompt=300), hp, 0.0)
        else:
            w.scrape[hp] = ScrapedLoad(running=1, waiting=2, kv_usage=0.1, age_s=0.0)
    place(w, request("a", arrival=0.0, prefix=PREFIX), "lp0", 0.0)
    assert warms(w.tick(0.1)) == []
    w.scrape.pop("hp1", None)
    w.reqs.pop("q-hp1", None)  # hp1's queue is gone: it gets the warm-up
    assert warms(w.tick(0.12)) == [("a", "hp1")]
