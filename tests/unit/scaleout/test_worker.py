"""The worker's policy stand-in: ask the scheduler once per attempt, fail open without it."""

from __future__ import annotations

from typing import Any

from ascendra_proxy.config import load_config, parse_config
from ascendra_proxy.core.decisions import Dispatch, Hold
from ascendra_proxy.core.request import RequestState
from ascendra_proxy.core.slo import SLO
from ascendra_proxy.scaleout.messages import Finish, RouteAsk
from ascendra_proxy.scaleout.worker import RemotePolicy, fail_open_policy


class FakeLink:
    def __init__(self, down_for: float | None) -> None:
        self.down_for = down_for
        self.sent: list[Any] = []

    def failing_open(self, now: float) -> bool:
        return self.down_for is not None and self.down_for >= 0.2

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


def _remote(down_for: float | None) -> tuple[RemotePolicy, FakeLink, Any]:
    cfg = load_config("configs/emulated-2lp-1hp.yaml")
    remote = RemotePolicy("ascendra", fail_open_policy(cfg))
    link = FakeLink(down_for)
    remote.link = link  # type: ignore[assignment]
    return remote, link, cfg


def _req() -> RequestState:
    return RequestState("r", "llama3-8b", 100, 10, SLO(1.0, 0.1), arrival=0.0)


def test_fail_open_is_the_configured_policy_binding_at_once() -> None:
    cfg = load_config("configs/emulated-2lp-1hp.yaml")
    assert cfg.policy.params.lp_ordering == "proxy_queue"  # type: ignore[attr-defined]
    assert fail_open_policy(cfg)._p.lp_ordering == "engine_priority"  # type: ignore[attr-defined]
    data = {
        "pools": [
            {
                "name": "p",
                "role": "mixed",
                "backends": [{"url": "http://127.0.0.1:9", "engine": "vllm", "model": "m"}],
            }
        ],
        "policy": {"type": "least_loaded"},
    }
    assert fail_open_policy(parse_config(data)).name == "least_loaded"


def test_connected_it_asks_once_per_attempt_and_holds() -> None:
    remote, link, _ = _remote(down_for=None)
    req = _req()
    assert isinstance(remote.route(req, [], 0.0), Hold)
    assert isinstance(remote.route(req, [], 0.05), Hold)  # the gateway re-asks: no resend
    assert [type(m) for m in link.sent] == [RouteAsk]
    req.on_dispatch(0.1, "lp-0")
    req.on_requeue()  # the attempt failed before an answer: a new question
    remote.route(req, [], 0.2, frozenset({"lp-0"}))
    assert [type(m) for m in link.sent] == [RouteAsk, RouteAsk]
    assert link.sent[1].exclude == ["lp-0"]
    remote.on_finish(req, 0.3)
    assert isinstance(link.sent[-1], Finish)


def test_without_a_scheduler_for_200_ms_it_routes_locally() -> None:
    remote, link, cfg = _remote(down_for=0.25)
    snaps = [_snap(b) for b in cfg.backend_infos()]
    decision = remote.route(_req(), snaps, 0.0)
    assert isinstance(decision, Dispatch) and not link.sent


def _snap(info: Any) -> Any:
    from ascendra_proxy.core.backend import InflightCounts, snapshot_of

    return snapshot_of(info, InflightCounts(), healthy=True, scraped=None, inflight_limit=None)


def test_each_worker_records_training_rows_in_its_own_file_and_does_not_retrain() -> None:
    from ascendra_proxy.scaleout.worker import worker_config

    data = {
        "pools": [
            {
                "name": "p",
                "role": "mixed",
                "backends": [{"url": "http://127.0.0.1:9", "engine": "vllm", "model": "m"}],
            }
        ],
        "predictor": {
            "model_path": "/tmp/m.txt",
            "training_data": {"path": "/tmp/rows.jsonl"},
            "retrain": {"interval_s": 600},
        },
    }
    cfg = parse_config(data)
    mine = worker_config(cfg, "w7")
    assert mine.predictor.training_data is not None
    assert mine.predictor.training_data.path == "/tmp/rows.w7.jsonl"
    assert mine.predictor.retrain is None and mine.predictor.model_path == "/tmp/m.txt"
    plain = parse_config({"pools": data["pools"]})
    assert worker_config(plain, "w7") is plain
