"""The drivers' tap: the rows it records for hand-built requests and backends."""

from __future__ import annotations

import orjson
import pytest

from ascendra_proxy.core.backend import BackendSnapshot, Role, ScrapedLoad
from ascendra_proxy.core.policies.ascendra.view import EngineFacts
from ascendra_proxy.core.request import Outcome, RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.predictor.dataset import TrainingRecorder
from ascendra_proxy.predictor.tap import TrainingTap

FACTS = EngineFacts(profile="a100-llama3-8b", max_num_batched_tokens=2048)


def snap(name: str, role: Role = Role.LP, queued: int = 0, inflight: int = 0) -> BackendSnapshot:
    return BackendSnapshot(
        name=name,
        pool=role.value,
        role=role,
        engine="vllm",
        model="m",
        healthy=True,
        inflight=inflight,
        queued_prompt_tokens=queued,
        scraped=ScrapedLoad(running=1, waiting=2, kv_usage=0.5, age_s=0.1),
    )


def req(rid: str, prompt: int, arrival: float = 0.0, ttft_slo: float = 1.0) -> RequestState:
    return RequestState(rid, "m", prompt, 100, SLO(ttft_slo, 0.1), arrival)


def rows(rec: TrainingRecorder) -> dict[str, dict[str, object]]:
    out = {}
    for line in rec.take_lines():
        x = orjson.loads(line)
        if x["k"] == "q":
            out[x["rid"]] = x
    return out


def q(row: dict[str, object]) -> dict[str, object]:
    names = ("prompt", "generated", "waited", "ahead", "cached", "resident")
    return dict(zip(names, row["q"], strict=True))  # type: ignore[call-overload]


def test_queue_positions_and_streams_on_a_backend() -> None:
    first, second, stream = req("a", 1000, 0.0), req("b", 600, 0.5), req("s", 300, 0.0)
    first.on_dispatch(1.0, "lp-0")
    second.on_dispatch(2.0, "lp-0")
    stream.on_dispatch(0.1, "lp-0")
    stream.on_tokens(0.3, 1)
    stream.on_tokens(0.35, 1)
    rec = TrainingRecorder("t")
    tap = TrainingTap(rec, {"lp-0": FACTS})
    tap.on_tick(3.0, [second, stream, first], [snap("lp-0", queued=1600, inflight=3)])
    got = rows(rec)
    assert q(got["a"]) == {
        "prompt": 1000, "generated": 0, "waited": 3.0, "ahead": 0, "cached": 0, "resident": False
    }  # fmt: skip
    assert q(got["b"])["ahead"] == 1000  # behind a, dispatched earlier
    assert q(got["s"])["resident"] is True and q(got["s"])["generated"] == 2
    b = got["a"]["b"]
    assert b["unstarted"] == 2 and b["unstarted_tokens"] == 1600  # type: ignore[index]
    assert b["decode_seqs"] == 1 and b["decode_context_tokens"] == 302  # type: ignore[index]
    assert b["recent_step_s"] == pytest.approx(0.05)  # type: ignore[index]
    assert b["running"] == 1 and b["scrape_age_s"] == 0.1  # type: ignore[index]
    assert b["profile"] == "a100-llama3-8b" and b["role"] == "lp"  # type: ignore[index]
    # a came first, at 1.0; s got its first token at 0.3
    assert got["b"]["x"] == {"on_backend_s": 1.0, "head_age_s": 2.0, "last_first_token_s": 2.7}
    assert got["s"]["x"]["on_backend_s"] == pytest.approx(2.9)  # type: ignore[index]


def test_priority_scheduling_orders_the_queue_by_priority() -> None:
    early, late = req("early", 1000), req("late", 500)
    early.on_dispatch(1.0, "hp-0")
    late.on_dispatch(2.0, "hp-0")
    rec = TrainingRecorder("t")
    facts = EngineFacts(profile="a100-llama3-8b", priority_scheduling=True)
    tap = TrainingTap(rec, {"hp-0": facts})
    tap.on_dispatched("early", "hp-0", 50, False)
    tap.on_dispatched("late", "hp-0", 10, False)  # more urgent: the engine runs it first
    tap.on_tick(3.0, [early, late], [snap("hp-0", Role.HP)])
    got = rows(rec)
    assert q(got["late"])["ahead"] == 0
    assert q(got["early"])["ahead"] == 500


def test_held_requests_go_to_the_least_queued_lp_in_deadline_order() -> None:
    loose, tight = req("loose", 800, 0.0, ttft_slo=5.0), req("tight", 400, 0.2, ttft_slo=1.0)
    rec = TrainingRecorder("t")
    facts = {"lp-0": FACTS, "lp-1": FACTS, "hp-0": FACTS}
    tap = TrainingTap(rec, facts)
    busy = req("busy", 3000)
    busy.on_dispatch(0.0, "lp-0")
    snaps = [snap("lp-0", queued=3000, inflight=1), snap("lp-1"), snap("hp-0", Role.HP)]
    tap.on_tick(1.0, [loose, tight, busy], snaps)
    got = rows(rec)
    assert got["tight"]["b"]["name"] == "lp-1"  # type: ignore[index]
    assert q(got["tight"])["ahead"] == 0  # earliest deadline: first
    assert q(got["loose"])["ahead"] == 200  # its share of tight's 400 over 2 LP backends
    tap.on_tokens("tight", 1.5, 1, "lp-0")  # late binding chose lp-0: still a valid label
    tap.on_tokens("loose", 1.6, 1, "hp-0")  # an HP ticket: not an LP answer
    tap.on_finished("tight", Outcome.COMPLETED)
    tap.on_finished("loose", Outcome.COMPLETED)
    labels = [orjson.loads(x) for x in rec.take_lines()]
    assert [(x["id"], round(x["ttft"], 6)) for x in labels] == [(got["tight"]["id"], 0.5)]
    assert rec.rows_censored == 1


def test_live_error_measurement_feeds_the_histograms() -> None:
    from predictor_builders import analytical
    from prometheus_client import CollectorRegistry

    from ascendra_proxy.predictor.metrics import PredictorMetrics

    reg = CollectorRegistry()
    metrics = PredictorMetrics(reg, lambda: "analytical")
    rec = TrainingRecorder("t", horizon_tokens=2)
    tap = TrainingTap(rec, {"lp-0": FACTS}, predictor=analytical(), metrics=metrics)
    r = req("a", 1000)
    r.on_dispatch(0.0, "lp-0")
    tap.on_tick(0.05, [r], [snap("lp-0", queued=1000, inflight=1)])
    tap.on_tokens("a", 5.05, 3, "lp-0")  # 5 s: far later than any analytical estimate
    count = reg.get_sample_value(
        "ascendra_predictor_error_seconds_bucket", {"target": "ttft", "le": "-2.0"}
    )
    assert count == 1  # predicted minus actual below -2 s: optimistic
    over = reg.get_sample_value(
        "ascendra_predictor_abs_error_over_slo_bucket", {"target": "ttft", "le": "2.0"}
    )
    assert over == 0  # |error| / 1 s SLO is above 2
    nk = reg.get_sample_value(
        "ascendra_predictor_error_seconds_bucket", {"target": "next_k", "le": "+Inf"}
    )
    assert nk == 1  # the two tokens after the first came with it
