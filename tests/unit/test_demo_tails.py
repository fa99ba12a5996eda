"""The demo's tail explanation: the proxy's request log joined to the client's records."""

from __future__ import annotations

from typing import Any

from ascendra_proxy.demo.tails import annotate, format_tails, join


def _request(index: int, arrival: float, out: int, ttft: float | None, **kw: Any) -> Any:
    return {
        "index": index,
        "arrival_s": arrival,
        "output_tokens": out,
        "prompt_tokens": 100 + index,
        "ttft_s": ttft,
        "slo_ttft_s": 1.0,
        "outcome": kw.pop("outcome", "completed"),
        **kw,
    }


def _entry(arrival: float, out: int, wait: float | None, **kw: Any) -> Any:
    moves = kw.pop("moves", [])
    route = kw.pop("route", [{"t": wait, "backend": "lp-0", "reason": "lp_room"}])
    return {
        "arrival": arrival,
        "max_tokens": out,
        "first_dispatch_s": wait,
        "slo_ttft_s": 2.0,  # wall clock: the demo's time scale is 2 below
        "route": route,
        "moves": moves,
    }


def test_join_pairs_equal_lengths_in_arrival_order() -> None:
    requests = [_request(0, 0.0, 10, 0.1), _request(1, 0.1, 20, 0.1), _request(2, 0.2, 10, 0.1)]
    entries = [_entry(50.2, 10, 0.0), _entry(50.0, 10, 0.0), _entry(50.1, 20, 0.0)]
    joined = join(requests, entries)
    assert [e["arrival"] if e else None for e in joined] == [50.0, 50.1, 50.2]
    assert join([_request(0, 0.0, 99, 0.1)], entries) == [None]


def test_every_ttft_miss_gets_one_cause() -> None:
    offload = {"reason": "offload_ttft", "from": "lp-0", "to": "hp-0", "t": 0.5}
    requests = [
        _request(0, 0.0, 10, 0.4),  # met
        _request(1, 1.0, 11, 3.0),  # offloaded, still late
        _request(2, 2.0, 12, 4.0),  # held past its deadline in the proxy (2.5 s > 2 s wall)
        _request(3, 3.0, 13, 1.5),  # dispatched at once, late on the engine
        _request(4, 4.0, 14, None, outcome="failed"),
        _request(5, 5.0, 15, 2.0),  # sent to HP from the queue as an offload
        _request(6, 6.0, 16, 2.0),  # no log line
    ]
    hp = [{"t": 0.1, "backend": "hp-0", "reason": "offload_queue"}]
    entries = [
        _entry(0.0, 10, 0.0),
        _entry(1.0, 11, 0.0, moves=[offload]),
        _entry(2.0, 12, 2.5),
        _entry(3.0, 13, 0.01),
        _entry(4.0, 14, 0.0),
        _entry(5.0, 15, 0.1, route=hp),
    ]
    doc: dict[str, Any] = {"requests": requests}
    annotate(doc, entries, scale=2.0)
    causes = [r.get("ttft_miss_cause") for r in requests]
    assert causes == [
        None,
        "offloaded",
        "held past deadline",
        "late on the engine",
        "not completed",
        "offloaded",
        "no proxy record",
    ]
    assert requests[2]["proxy_wait_s"] == 1.25  # model time
    [event] = requests[5]["events"]  # from the queue to HP, as an offload
    assert event["kind"] == "offload" and event["t"] == 5.0 + 0.05
    assert not requests[3]["events"]
    tails = doc["tails"]
    assert tails["joined"] == 6 and tails["ttft_misses"] == 6
    assert tails["causes"]["offloaded"] == 2
    assert [row["index"] for row in tails["slowest"]][:2] == [2, 1]
    text = "\n".join(format_tails({"ascendra": doc}))
    assert "ascendra: 6 missed" in text and "#2: TTFT 4000 ms" in text
    assert "held past deadline" in text
