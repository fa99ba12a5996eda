"""The incremental SSE decoder: any split of the byte stream gives the same events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ascendra_proxy.backends.sse import DONE, SSEDecoder, SSEOverflow, frame

VLLM_STREAM = (
    b'data: {"id":"cmpl-1","choices":[{"index":0,"text":" a","token_ids":[5]}]}\n\n'
    b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"","token_ids":[6]}]}\n\n'
    b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"\xc3\xa9","token_ids":[7,8]}]}\n\n'
    b'data: {"error":{"message":"boom","type":"X","param":null,"code":500}}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'{"id":"cmpl-1","choices":[{"index":0,"text":" a","token_ids":[5]}]}',
    b'{"id":"cmpl-1","choices":[{"index":0,"text":"","token_ids":[6]}]}',
    b'{"id":"cmpl-1","choices":[{"index":0,"text":"\xc3\xa9","token_ids":[7,8]}]}',
    b'{"error":{"message":"boom","type":"X","param":null,"code":500}}',
    DONE,
]


def decode_in_pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    dec = SSEDecoder()
    out: list[bytes] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out.extend(dec.feed(data[prev:cut]))
        prev = cut
    assert dec.pending == b""
    return out


def test_whole_stream_in_one_read() -> None:
    assert SSEDecoder().feed(VLLM_STREAM) == EXPECTED


def test_byte_by_byte() -> None:
    assert decode_in_pieces(VLLM_STREAM, list(range(1, len(VLLM_STREAM)))) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(VLLM_STREAM)), max_size=20))
def test_any_split_points_give_the_same_events(cuts: list[int]) -> None:
    assert decode_in_pieces(VLLM_STREAM, cuts) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(VLLM_STREAM)), max_size=20))
def test_crlf_line_endings_split_anywhere(cuts: list[int]) -> None:
    crlf = VLLM_STREAM.replace(b"\n", b"\r\n")
    assert decode_in_pieces(crlf, cuts) == EXPECTED


def test_lone_cr_at_read_boundary_is_held_back() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: x\r") == []
    assert dec.feed(b"\n\r") == []
    assert dec.feed(b"\ndata: y\r\r") == [b"x"]  # the last \r may be half of \r\n
    assert dec.feed(b"data: z\n\n") == [b"y", b"z"]


@pytest.mark.parametrize(
    ("raw", "events"),
    [
        (b": keep-alive comment\n\ndata: a\n\n", [b"a"]),
        (b"event: message\nid: 7\ndata: a\n\n", [b"a"]),
        (b"data: line1\ndata: line2\n\n", [b"line1\nline2"]),
        (b"data:nospace\n\n", [b"nospace"]),
        (b"data:  two spaces\n\n", [b" two spaces"]),
        (b"retry: 100\n\n", []),
        (b"\n\n\n\ndata: a\n\n\n", [b"a"]),
        (b"data\n\n", [b""]),
    ],
)
def test_spec_corners(raw: bytes, events: list[bytes]) -> None:
    assert SSEDecoder().feed(raw) == events


def test_incomplete_event_stays_pending() -> None:
    dec = SSEDecoder()
    assert dec.feed(b'data: {"a":1}\n') == []
    assert dec.pending == b'data: {"a":1}\n'


def test_oversized_event_raises() -> None:
    dec = SSEDecoder(max_event_bytes=64)
    with pytest.raises(SSEOverflow):
        dec.feed(b"data: " + b"x" * 100)


def test_frame_round_trips() -> None:
    assert SSEDecoder().feed(frame(b'{"x":1}') + frame(DONE)) == [b'{"x":1}', DONE]
