"""Incremental Server-Sent Events decoder for upstream token streams.

Theory of operation: TCP reads cut an SSE stream anywhere: inside a ``data:`` line, between
the two newlines that end an event, between ``\\r`` and ``\\n``.  ``SSEDecoder.feed`` takes
each read as it arrives and returns the ``data`` payloads of the events completed by it, in
order; whatever is left over waits for the next read.

The hot path is the shape vLLM and SGLang emit: ``data: <json>\\n\\n``, one or several per
read.  That case is one ``split`` plus a prefix check per event.  Everything else the SSE
spec allows is handled by the slow path: ``\\r\\n`` and lone ``\\r`` line ends (a ``\\r`` at
the very end of a read is held back, as it may be half of a ``\\r\\n``), comment lines
(``:``), ``event:``/``id:``/``retry:`` fields (ignored: neither engine sets them), and
multi-line data (joined with ``\\n``).  Events without data are dropped.

An event larger than ``max_event_bytes`` raises ``SSEOverflow``: a misbehaving upstream must
not make the proxy buffer without bound.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEOverflow(ValueError):
    """An event grew beyond the decoder's limit without terminating."""


class SSEDecoder:
    __slots__ = ("_buf", "_max")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self._max = max_event_bytes

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (non-empty at EOF means a truncated stream)."""
        return self._buf

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf + tail
            if len(self._buf) > self._max:
                raise SSEOverflow(f"SSE event exceeds {self._max} bytes")
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop() + tail
        out: list[bytes] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                out.append(block[6:])
                continue
            payload = _parse_block(block)
            if payload is not None:
                out.append(payload)
        if len(self._buf) > self._max:
            raise SSEOverflow(f"SSE event exceeds {self._max} bytes")
        return out


def _parse_block(block: bytes) -> bytes | None:
    """The general SSE field parser for one event block (lines already ``\\n``-separated)."""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if field != b"data":
            continue
        data.append(value[1:] if value.startswith(b" ") else value)
    if not data:
        return None
    return b"\n".join(data)


def frame(payload: bytes) -> bytes:
    """One SSE event as the engines frame it."""
    return b"data: " + payload + b"\n\n"
