"""Token counting from chunks, and stripping what the client did not ask for."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ascendra_proxy.backends.chunks import ChunkReader, ClientAsks
from ascendra_proxy.backends.errors import InStreamError, UpstreamProtocolError
from ascendra_proxy.backends.sse import SSEDecoder

ALL = ClientAsks(token_ids=True, include_usage=True, continuous_usage=True)
NONE = ClientAsks()


def chunk(**kw: Any) -> bytes:
    return orjson.dumps({"id": "cmpl-1", "object": "text_completion", "model": "m", **kw})


def choice(text: str, ids: list[int] | None = None, **kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"index": 0, "text": text, "finish_reason": None, **kw}
    if ids is not None:
        c["token_ids"] = ids
    return c


def usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": 4 + n}


def tokens_of(r: ChunkReader, payload: bytes) -> int:
    r.read(payload)
    return r.tokens


def test_counts_token_ids_not_chunks() -> None:
    r = ChunkReader("b", ALL)
    counts = [
        tokens_of(r, chunk(choices=[choice("a", [1])])),
        tokens_of(r, chunk(choices=[choice("", [2])])),  # partial UTF-8: empty text, 1 token
        tokens_of(r, chunk(choices=[choice("bcd", [3, 4, 5])])),  # stream_interval > 1
        tokens_of(r, chunk(choices=[], usage=usage(5))),  # final usage chunk
    ]
    assert counts == [1, 1, 3, 0]
    assert r.counted == 5
    rec = r.record
    assert rec.token_ids == [1, 2, 3, 4, 5] and "".join(rec.text) == "abcd"
    assert rec.id == "cmpl-1" and rec.model == "m" and rec.usage == usage(5)


def test_falls_back_to_running_usage() -> None:
    r = ChunkReader("b", ALL)
    got = [
        tokens_of(r, chunk(choices=[choice("a")], usage=usage(1))),
        tokens_of(r, chunk(choices=[choice("")], usage=usage(2))),
        tokens_of(r, chunk(choices=[choice("xy")], usage=usage(4))),
        tokens_of(r, chunk(choices=[], usage=usage(4))),
    ]
    assert got == [1, 1, 2, 0]


def test_last_resort_counts_content_and_reconciles_with_final_usage() -> None:
    r = ChunkReader("b", ALL)
    got = [
        tokens_of(r, chunk(choices=[choice("a")])),
        tokens_of(r, chunk(choices=[choice("")])),  # invisible without ids or usage
        tokens_of(r, chunk(choices=[choice("b")])),
        tokens_of(r, chunk(choices=[], usage=usage(3))),  # reconciled here
    ]
    assert got == [1, 0, 1, 1]
    assert r.counted == 3


def test_chat_role_chunk_is_not_a_token() -> None:
    r = ChunkReader("b", ALL)
    role = orjson.dumps(
        {
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            "prompt_token_ids": [1, 2],
            "usage": usage(0),
        }
    )
    assert tokens_of(r, role) == 0 and r.record.prompt_token_ids == [1, 2]
    hi = orjson.dumps({"choices": [{"index": 0, "delta": {"content": "hi"}, "token_ids": [9]}]})
    assert tokens_of(r, hi) == 1
    assert (r.record.text, r.record.token_ids) == (["hi"], [9])


def test_multiple_choices_sum_tokens() -> None:
    r = ChunkReader("b", ALL)
    both = chunk(choices=[choice("a", [1]), {"index": 1, "text": "b", "token_ids": [2, 3]}])
    assert tokens_of(r, both) == 3 and r.record.token_ids == [1]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"error":{"message":"boom","type":"X","param":null,"code":503}}',
        b'{"object":"error","message":"boom","type":"X","code":503}',
    ],
)
def test_in_stream_error_shapes(payload: bytes) -> None:
    with pytest.raises(InStreamError) as info:
        ChunkReader("b", ALL).read(payload)
    assert info.value.status == 503 and info.value.message == "boom"
    assert not info.value.is_client_error and info.value.payload == payload


def test_in_stream_client_error_is_flagged() -> None:
    with pytest.raises(InStreamError) as info:
        ChunkReader("b", ALL).read(b'{"error":{"message":"too long","code":400}}')
    assert info.value.is_client_error


@pytest.mark.parametrize("payload", [b"{not json", b"[1,2]", b'"x"'])
def test_garbage_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkReader("b", ALL).read(payload)


def test_client_asking_everything_gets_original_bytes() -> None:
    r = ChunkReader("b", ALL)
    payload = chunk(choices=[choice("a", [1])], usage=usage(1))
    assert r.read(payload) == b"data: " + payload + b"\n\n"


def rendered(asks: ClientAsks, payload: bytes) -> dict[str, Any] | None:
    r = ChunkReader("b", asks)
    out = r.read(payload)
    if out is None:
        return None
    events = SSEDecoder().feed(out)
    assert len(events) == 1
    result: dict[str, Any] = orjson.loads(events[0])
    return result


def test_strips_token_ids_and_running_usage_for_a_plain_client() -> None:
    payload = chunk(choices=[choice("a", [1], prompt_token_ids=[7, 8])], usage=usage(1))
    got = rendered(NONE, payload)
    assert got is not None
    assert "usage" not in got
    assert got["choices"][0] == {"index": 0, "text": "a", "finish_reason": None}


def test_drops_usage_chunk_unless_asked() -> None:
    payload = chunk(choices=[], usage=usage(3))
    assert rendered(NONE, payload) is None
    kept = rendered(ClientAsks(include_usage=True), payload)
    assert kept is not None and kept["usage"]["completion_tokens"] == 3


def test_keeps_running_usage_when_asked_but_strips_ids() -> None:
    asks = ClientAsks(include_usage=True, continuous_usage=True)
    got = rendered(asks, chunk(choices=[choice("a", [1])], usage=usage(1)))
    assert got is not None and got["usage"]["completion_tokens"] == 1
    assert "token_ids" not in got["choices"][0]


def test_keeps_ids_when_asked_but_strips_usage() -> None:
    got = rendered(ClientAsks(token_ids=True), chunk(choices=[choice("a", [1])], usage=usage(1)))
    assert got is not None and got["choices"][0]["token_ids"] == [1] and "usage" not in got


def test_chat_top_level_prompt_ids_are_stripped() -> None:
    payload = orjson.dumps(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}], "prompt_token_ids": [1, 2]}
    )
    got = rendered(NONE, payload)
    assert got is not None and "prompt_token_ids" not in got


def test_nothing_to_strip_forwards_original_bytes() -> None:
    payload = chunk(choices=[choice("a")])
    r = ChunkReader("b", NONE)
    assert r.read(payload) == b"data: " + payload + b"\n\n"


# ---------------------------------------------------------------- system_fingerprint
# vLLM stamps it on the stream's last message: the usage-only chunk when usage was asked for
# (the proxy always asks), else each terminal chunk.  A client that did not ask for usage
# must get it on its terminal chunk, as a direct client does.

FP = "vllm-0.32.0-abc"


def framed(out: bytes | None) -> list[dict[str, Any]]:
    assert out is not None
    return [orjson.loads(e) for e in SSEDecoder().feed(out)]


def terminal(ids: list[int] | None = None) -> bytes:
    return chunk(choices=[choice("z", ids, finish_reason="length")], usage=usage(2))


def usage_chunk(fp: str | None = FP) -> bytes:
    extra = {} if fp is None else {"system_fingerprint": fp}
    return chunk(choices=[], usage=usage(2), **extra)


@pytest.mark.parametrize("ids", [[2], None], ids=["token_ids", "no_token_ids"])
def test_plain_client_gets_the_fingerprint_on_its_terminal_chunk(ids: list[int] | None) -> None:
    r = ChunkReader("b", NONE)
    first = framed(r.read(chunk(choices=[choice("a", ids and [1])], usage=usage(1))))
    assert "system_fingerprint" not in first[0]
    assert r.read(terminal(ids)) is None  # held until the usage chunk
    assert r.tokens == 1 and r.record.finish_reason == "length"
    (last,) = framed(r.read(usage_chunk()))
    assert list(last) == ["id", "object", "model", "choices", "system_fingerprint"]
    assert last["system_fingerprint"] == FP
    assert last["choices"] == [{"index": 0, "text": "z", "finish_reason": "length"}]
    assert r.flush() is None


def test_usage_client_gets_the_fingerprint_on_the_usage_chunk_only() -> None:
    r = ChunkReader("b", ClientAsks(include_usage=True))
    (end,) = framed(r.read(terminal([2])))
    assert "system_fingerprint" not in end and "usage" not in end
    (last,) = framed(r.read(usage_chunk()))
    assert last["choices"] == [] and last["system_fingerprint"] == FP
    assert r.flush() is None


def test_everything_client_is_not_held() -> None:
    r = ChunkReader("b", ALL)
    assert r.read(terminal([2])) == b"data: " + terminal([2]) + b"\n\n"


def test_held_terminal_chunk_is_flushed_unchanged_without_a_usage_chunk() -> None:
    r = ChunkReader("b", ClientAsks(token_ids=True))
    assert r.read(terminal([2])) is None
    (end,) = framed(r.flush())
    assert end["choices"][0]["token_ids"] == [2] and "system_fingerprint" not in end
    assert "usage" not in end
    assert r.flush() is None


def test_usage_chunk_without_fingerprint_releases_the_terminal_chunk_as_is() -> None:
    r = ChunkReader("b", NONE)
    assert r.read(terminal([2])) is None
    (end,) = framed(r.read(usage_chunk(fp=None)))
    assert "system_fingerprint" not in end and end["choices"][0]["finish_reason"] == "length"


def test_each_choices_terminal_chunk_gets_the_fingerprint() -> None:
    """n > 1: vLLM stamps every terminal chunk; other choices' chunks are not held."""
    r = ChunkReader("b", NONE)
    done0 = chunk(choices=[choice("a", finish_reason="length")])
    more1 = chunk(choices=[{"index": 1, "text": "b", "finish_reason": None}])
    done1 = chunk(choices=[{"index": 1, "text": "c", "finish_reason": "length"}])
    assert r.read(done0) is None
    assert framed(r.read(more1))[0]["choices"][0]["text"] == "b"
    assert r.read(done1) is None
    got = framed(r.read(usage_chunk()))
    assert [e["choices"][0]["index"] for e in got] == [0, 1]
    assert all(e["system_fingerprint"] == FP for e in got)
