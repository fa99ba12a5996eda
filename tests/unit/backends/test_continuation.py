"""Continuation plans and the reader that renders them as the original client stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ascendra_proxy.backends.chunks import ClientAsks, StreamRecord
from ascendra_proxy.backends.continuation import ContinuationReader, plan
from ascendra_proxy.backends.errors import UpstreamProtocolError
from ascendra_proxy.backends.sse import SSEDecoder


def _record(ids: list[int], texts: list[str]) -> StreamRecord:
    rec = StreamRecord()
    rec.set_identity({"id": "cmpl-1", "created": 5, "model": "m", "object": "text_completion"})
    rec.prompt_token_ids = [1, 2]
    for tid, text in zip(ids, texts, strict=True):
        rec.token_ids.append(tid)
        if text:
            rec.text.append(text)
            rec.text_at = len(rec.token_ids)
    return rec


CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


@pytest.mark.parametrize(
    ("texts", "rollback", "prompt"),
    [
        (["a", "b", "c"], 0, [1, 2, 10, 11, 12]),
        (["a", "", ""], 2, [1, 2, 10]),  # two bytes of an unfinished character
        (["", "", ""], 3, [1, 2]),
    ],
)
def test_plan_rolls_back_tokens_whose_text_was_not_sent(
    texts: list[str], rollback: int, prompt: list[int]
) -> None:
    body = {"model": "m", "prompt": "p", "stream": True, "max_tokens": 10, "min_tokens": 5}
    c = plan(body, False, _record([10, 11, 12], texts), 10)
    assert c is not None and c.rollback == rollback and c.body["prompt"] == prompt
    assert c.body["max_tokens"] == 10 - c.kept and c.body["min_tokens"] == 5 - c.kept


def test_plan_for_chat_is_a_completions_body_with_the_sampling_kept() -> None:
    body = {**CHAT, "max_completion_tokens": 8, "seed": 3, "temperature": 0.5, "logprobs": True}
    c = plan(body, True, _record([10], ["a"]), 8)
    assert c is not None and c.chat
    assert "messages" not in c.body and "max_completion_tokens" not in c.body
    assert "logprobs" not in c.body
    assert c.body["seed"] == 3 and c.body["temperature"] == 0.5 and c.body["max_tokens"] == 7


@pytest.mark.parametrize(
    ("extra", "replay", "ok"),
    [
        ({"stop": ["x"]}, False, False),
        ({"stop": ["x"]}, True, True),
        ({"n": 2}, True, False),
        ({"max_tokens": 2}, True, False),  # nothing left to generate
    ],
)
def test_plan_refuses_what_it_cannot_continue_exactly(
    extra: dict[str, Any], replay: bool, ok: bool
) -> None:
    body = {"model": "m", "prompt": "p", "stream": True, **extra}
    c = plan(body, False, _record([10, 11], ["a", "bc"]), body.get("max_tokens", 9), replay)
    assert (c is not None) is ok
    if c is not None:  # a replay regenerates everything and skips the text already sent
        assert c.body["prompt"] == [1, 2] and c.rollback == 2 and c.skip_chars == 3


def _chunk(ids: list[int], text: str, finish: str | None = None, usage: Any = None) -> bytes:
    obj: dict[str, Any] = {"id": "other", "created": 9, "model": "m2", "object": "text_completion"}
    obj["choices"] = [{"index": 0, "text": text, "token_ids": ids, "finish_reason": finish}]
    if usage is not None:
        obj["usage"] = usage
    return orjson.dumps(obj)


def test_reader_skips_the_rolled_back_tokens_and_keeps_the_identity() -> None:
    rec = _record([10, 11], ["a", ""])
    c = plan({"model": "m", "prompt": "p", "stream": True}, True, rec, 6)
    assert c is not None and c.rollback == 1
    reader = ContinuationReader("b", ClientAsks(include_usage=True, continuous_usage=True), rec, c)
    assert reader.read(_chunk([11], "")) is None
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    out = reader.read(_chunk([12], "é", "length", usage))
    assert out is not None and reader.tokens == 1
    obj = orjson.loads(out[len(b"data: ") :])
    assert (obj["id"], obj["created"], obj["model"]) == ("cmpl-1", 5, "m")
    assert obj["choices"][0]["delta"] == {"content": "é"}
    assert obj["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert rec.token_ids == [10, 11, 12] and "".join(rec.text) == "aé"


def test_reader_refuses_a_continuation_that_diverges_from_ids_the_client_saw() -> None:
    rec = _record([10, 11], ["a", ""])
    c = plan({"model": "m", "prompt": "p", "stream": True}, False, rec, 6)
    assert c is not None
    reader = ContinuationReader("b", ClientAsks(token_ids=True), rec, c)
    with pytest.raises(UpstreamProtocolError, match="diverged"):
        reader.read(_chunk([99], ""))


def test_reader_accepts_other_tokens_where_the_client_saw_nothing() -> None:
    rec = _record([10, 11], ["a", ""])
    c = plan({"model": "m", "prompt": "p", "stream": True}, False, rec, 6)
    assert c is not None
    reader = ContinuationReader("b", ClientAsks(), rec, c)
    out = reader.read(_chunk([99], "z"))
    assert out is not None and b'"text":"z"' in out and reader.tokens == 0
    assert rec.token_ids == [10, 99]


FP = "vllm-0.32.0-new"
FP_KEY = "system_fingerprint"


def _usage_chunk(usage: Any, fp: str | None = FP) -> bytes:
    obj: dict[str, Any] = {"id": "other", "created": 9, "model": "m2", "object": "text_completion"}
    obj["choices"] = []
    obj["usage"] = usage
    if fp is not None:
        obj["system_fingerprint"] = fp
    return orjson.dumps(obj)


def _events(out: bytes | None) -> list[dict[str, Any]]:
    assert out is not None
    return [orjson.loads(e) for e in SSEDecoder().feed(out)]


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_continuation_gives_a_plain_client_the_fingerprint_on_its_terminal_chunk(
    chat: bool,
) -> None:
    rec = _record([10], ["a"])
    c = plan({"model": "m", "prompt": "p", "stream": True}, chat, rec, 3)
    assert c is not None
    reader = ContinuationReader("b", ClientAsks(), rec, c)
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert _events(reader.read(_chunk([11], "b")))[0].get("system_fingerprint") is None
    assert reader.read(_chunk([12], "c", "length", usage)) is None  # held
    assert reader.tokens == 1
    (end,) = _events(reader.read(_usage_chunk(usage)))
    assert end["id"] == "cmpl-1" and end["system_fingerprint"] == FP
    assert list(end)[-2:] == ["choices", "system_fingerprint"] and "usage" not in end
    assert end["choices"][0]["finish_reason"] == "length"
    assert reader.flush() is None


def test_continuation_usage_chunk_carries_the_fingerprint() -> None:
    rec = _record([10], ["a"])
    c = plan({"model": "m", "prompt": "p", "stream": True}, False, rec, 3)
    assert c is not None
    reader = ContinuationReader("b", ClientAsks(include_usage=True), rec, c)
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    (end,) = _events(reader.read(_chunk([11, 12], "bc", "length", usage)))
    assert "system_fingerprint" not in end and "usage" not in end
    (last,) = _events(reader.read(_usage_chunk(usage)))
    assert last["choices"] == [] and last["system_fingerprint"] == FP
    assert last["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert list(last) == ["id", "object", "created", "model", "choices", "usage", FP_KEY]
