"""What one tick costs with 1,000 requests in flight (predictions included).

The test checks the scenes (a calm one asks for almost nothing, a burst for many actions);
the cost itself is measured by ``benchmarks/tick_cost.py``, which reuses these scenes (a time
bound asserted in a test would fail on a busy machine; the goal is a calm tick under 2 ms).
The scene: 4 LP + 2 HP A100 backends (the repository's ``a100-llama3-8b`` profile), 1,000
requests in flight: ``held`` in the proxy queue, 3 not started per LP backend, the rest
streaming.  A *calm* scene has nothing at risk (no action); a *burst* scene has a backlog
of held requests so that a few dozen are offloaded in the tick measured.
"""

from __future__ import annotations

import time

import pytest
from asc_world import World, lp_hp, request

from ascendra_proxy.core.policies.ascendra import AscendraParams, AscendraPolicy
from ascendra_proxy.core.policies.ascendra.view import EngineFacts
from ascendra_proxy.engine.profile import load_profile

NOW = 100.0


def scene(held: int, held_spread_s: float, params: AscendraParams) -> World:
    infos = lp_hp(4, 2)
    w = World(infos, params=params)
    facts = {b.name: EngineFacts(profile="a100", priority_scheduling=True) for b in infos}
    profile = {"a100": load_profile("a100-llama3-8b")}
    w.policy = AscendraPolicy(params, infos, step_models=profile, facts=facts)
    lps = [b.name for b in infos[:4]]
    names = [b.name for b in infos]
    for i in range(1000):
        if i < held:
            arrival = NOW - (i % 50) * held_spread_s
        elif i < held + 12:
            arrival = NOW - 0.02
        else:
            arrival = NOW - 5.0 + (i % 100) * 0.01
        r = request(
            f"r{i}",
            arrival=arrival,
            prompt=200 + (i * 37) % 1500,
            max_tokens=500,
            prefix=tuple(range(i, i + 40)),
        )
        w.reqs[r.id] = r
        if held <= i < held + 12:
            r.on_dispatch(arrival, lps[i % 4])
        elif i >= held:
            r.on_dispatch(arrival, names[i % 6])
            for k in range(20):
                r.on_tokens(arrival + 0.3 + 0.04 * k, 1)
    return w


def measure(w: World, reps: int = 200) -> tuple[float, float, int]:
    """(min, median) milliseconds of one tick on a fixed scene, and its action count."""
    live = list(w.reqs.values())
    snaps = w.snapshots()
    actions = len(w.policy.tick(NOW, live, snaps))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        w.policy.tick(NOW, live, snaps)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0] * 1e3, times[len(times) // 2] * 1e3, actions


SCENES = [
    ("calm proxy_queue", 10, 0.001, AscendraParams()),
    ("calm engine_priority", 0, 0.0, AscendraParams(lp_ordering="engine_priority")),
    ("burst proxy_queue", 300, 0.012, AscendraParams()),
]


@pytest.mark.parametrize(("label", "held", "spread", "params"), SCENES)
def test_tick_cost_with_1000_in_flight(
    label: str, held: int, spread: float, params: AscendraParams
) -> None:
    _, _, actions = measure(scene(held, spread, params), reps=3)
    if label.startswith("calm"):
        assert actions <= 10  # the scene really is calm (only LP room being filled)
    else:
        assert actions >= 20
