"""The request log: one JSON line per finished request, with its waits, route and moves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fake_backend import FakeBackend, Script
from proxy_rig import MODEL, RigFactory, wait_until
from sse_client import read_events

from ascendra_proxy.core.decisions import Dispatch, Move, Reject
from ascendra_proxy.proxy.request_log import RequestLog
from ascendra_proxy.proxy.ticker import apply_action

STREAM = {"model": MODEL, "prompt": [5, 6, 7, 8], "stream": True, "max_tokens": 5}


def _route_to(name: str) -> Any:
    def route(state: Any, snaps: Any, now: float, exclude: frozenset[str]) -> Dispatch | Reject:
        return Dispatch(name, "test") if name not in exclude else Reject(503, "x", "x", "t")

    return route


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_an_offloaded_request_logs_its_route_and_move(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    lp = FakeBackend("lp", script=Script(first_delay_s=30))
    hp = FakeBackend("hp", script=Script(tokens=3))
    log_path = tmp_path / "logs" / "requests.jsonl"
    async with make_rig([lp, hp]) as r:
        gw = r.gateway
        gw.request_log = RequestLog(log_path)
        gw.policy.route = _route_to("lp")  # type: ignore[method-assign]
        task = asyncio.create_task(r.post("/v1/completions", STREAM))
        await wait_until(lambda: lp.running == 1)
        (flight,) = gw.flights.values()
        assert apply_action(gw, Move(flight.state.id, Dispatch("hp", "offload_ttft"), "offload"))
        _, done = await read_events(await task)
        assert done
        await wait_until(lambda: not gw.flights)
        lp.script = Script(tokens=2)
        _, done = await read_events(await r.post("/v1/completions", STREAM))  # not moved
        assert done
        await wait_until(lambda: not gw.flights)
        gw.request_log.close()
    moved, direct = _lines(log_path)
    assert moved["outcome"] == "completed" and moved["tokens"] == 3
    assert [hop["backend"] for hop in moved["route"]] == ["lp", "hp"]
    [move] = moved["moves"]
    assert (move["reason"], move["from"], move["to"]) == ("offload_ttft", "lp", "hp")
    assert 0 <= moved["first_dispatch_s"] <= move["t"] <= moved["ttft_s"] <= moved["end_s"]
    assert moved["slo_ttft_s"] > 0 and moved["prompt_tokens"] == 4 and moved["max_tokens"] == 5
    assert direct["moves"] == [] and [hop["backend"] for hop in direct["route"]] == ["lp"]
    assert [hop["reason"] for hop in moved["route"]] == ["test", "offload_ttft"]
    assert direct["arrival"] > moved["arrival"]


async def test_a_request_refused_after_admission_is_logged_without_a_route(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    only = FakeBackend("only")
    async with make_rig([only]) as r:
        gw = r.gateway
        gw.request_log = RequestLog(tmp_path / "requests.jsonl")
        gw.policy.route = _route_to("gone")  # type: ignore[method-assign]
        resp = await r.post("/v1/completions", STREAM)
        assert resp.status >= 400
        await wait_until(lambda: not gw.flights)
        gw.request_log.close()
    [line] = _lines(tmp_path / "requests.jsonl")
    assert line["route"] == [] and line["first_dispatch_s"] is None and line["ttft_s"] is None
    assert line["outcome"] != "completed"
