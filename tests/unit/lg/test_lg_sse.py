"""Token counting in OpenAI-compatible streams: usage deltas, token_ids, chunk fallback."""

from __future__ import annotations

import orjson

from loadgen.sse import StreamCounter


def ev(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(text: str, completion_tokens: int | None = None, **extra: object) -> bytes:
    body: dict[str, object] = {"choices": [{"index": 0, "text": text, **extra}]}
    if completion_tokens is not None:
        body["usage"] = {"prompt_tokens": 6, "completion_tokens": completion_tokens}
    return ev(body)


def test_running_usage_counts_empty_text_tokens_and_multi_token_chunks() -> None:
    c = StreamCounter()
    assert c.feed(chunk(" a", 1)) == 1
    assert c.feed(chunk("", 2)) == 1  # partial UTF-8: empty text, still a token
    assert c.feed(chunk("bc", 5)) == 3  # stream_interval > 1
    assert c.feed(ev({"choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 5}})) == 0
    assert c.feed(b"data: [DONE]\n\n") == 0
    assert (c.mode, c.done, c.prompt_tokens, c.usage_tokens) == ("usage", True, 6, 5)


def test_chat_role_chunk_is_not_a_token() -> None:
    c = StreamCounter()
    role = {"choices": [{"delta": {"role": "assistant", "content": ""}}]}
    assert c.feed(ev({**role, "usage": {"completion_tokens": 0}})) == 0
    assert (
        c.feed(ev({"choices": [{"delta": {"content": "hi"}}], "usage": {"completion_tokens": 1}}))
        == 1
    )


def test_events_split_across_reads_and_crlf() -> None:
    c = StreamCounter()
    data = (chunk("x", 1) + chunk("y", 2)).replace(b"\n", b"\r\n")
    got = [c.feed(data[i : i + 7]) for i in range(0, len(data), 7)]
    assert sum(got) == 2
    assert c.feed(b": keep-alive comment\n\nevent: ping\n\n") == 0


def test_token_ids_mode() -> None:
    c = StreamCounter()
    assert c.feed(chunk("ab", None, token_ids=[5, 6])) == 2
    assert c.feed(chunk("", None, token_ids=[7])) == 1
    assert c.mode == "token_ids"


def test_fallback_counts_non_empty_chunks_and_reconciles_with_final_usage() -> None:
    c = StreamCounter()
    assert c.feed(chunk("a") + chunk("") + chunk("b")) == 2
    assert c.fallback
    # llama.cpp style: usage rides on the finish chunk; one token was invisible
    final = {
        "choices": [{"text": "", "finish_reason": "length"}],
        "usage": {"completion_tokens": 3},
    }
    assert c.feed(ev(final)) == 1
    assert c.finish_reason == "length"


def test_error_event_ends_the_stream() -> None:
    c = StreamCounter()
    c.feed(chunk("a", 1))
    assert c.feed(ev({"error": {"message": "boom", "code": 500}})) == 0
    assert c.done and c.error == "boom"
    assert c.feed(chunk("b", 2)) == 0  # nothing counted after the end
