"""Upstream request building per engine."""

from __future__ import annotations

import orjson
import pytest

from ascendra_proxy.backends import adapter_for
from ascendra_proxy.backends.base import Endpoint
from ascendra_proxy.backends.chunks import ClientAsks


def test_vllm_stream_adds_token_ids_and_usage_and_remembers_what_client_asked() -> None:
    body = {"model": "m", "prompt": "x", "stream": True, "temperature": 0.3}
    req = adapter_for("vllm").prepare(Endpoint.COMPLETIONS, body, "req-1")
    sent = orjson.loads(req.body)
    assert sent["return_token_ids"] is True
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert sent["temperature"] == 0.3 and "rid" not in sent
    assert req.asks == ClientAsks() and req.stream and req.path == "/v1/completions"
    assert body == {"model": "m", "prompt": "x", "stream": True, "temperature": 0.3}


def test_client_options_are_recorded() -> None:
    body = {
        "model": "m",
        "messages": [],
        "stream": True,
        "return_token_ids": True,
        "stream_options": {"include_usage": True},
    }
    req = adapter_for("vllm").prepare(Endpoint.CHAT, body, "req-1")
    assert req.asks == ClientAsks(token_ids=True, include_usage=True, continuous_usage=False)


def test_non_stream_is_forwarded_without_extras() -> None:
    body = {"model": "m", "prompt": "x"}
    req = adapter_for("vllm").prepare(Endpoint.COMPLETIONS, body, "req-1")
    assert orjson.loads(req.body) == body and not req.stream


def test_priority_is_set_when_given() -> None:
    req = adapter_for("vllm").prepare(Endpoint.COMPLETIONS, {"model": "m"}, "r", priority=-3)
    assert orjson.loads(req.body)["priority"] == -3


def test_sglang_priority_is_negated_to_its_higher_first_convention() -> None:
    req = adapter_for("sglang").prepare(Endpoint.COMPLETIONS, {"model": "m"}, "r", priority=-3)
    assert orjson.loads(req.body)["priority"] == 3


def test_sglang_sets_rid_for_abort_and_keeps_a_client_rid() -> None:
    a = adapter_for("sglang")
    assert a.needs_abort_call
    req = a.prepare(Endpoint.COMPLETIONS, {"model": "m", "stream": True}, "req-9")
    assert orjson.loads(req.body)["rid"] == "req-9" and req.request_id == "req-9"
    req = a.prepare(Endpoint.COMPLETIONS, {"model": "m", "rid": "mine"}, "req-9")
    assert req.request_id == "mine"


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        adapter_for("tgi")
