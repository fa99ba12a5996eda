"""Raw HTTP/1.1 over a socket, for requests no client library would send (fuzzing, framing
errors, slow clients): send bytes, read one response back, parse just enough of it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_response(data: bytes, head_request: bool = False) -> RawResponse | None:
    """One complete response at the start of ``data`` (None if incomplete or not HTTP)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_request:  # the answer to HEAD has headers only
        return RawResponse(status, headers, b"")
    if "content-length" in headers:
        n = int(headers["content-length"])
        return RawResponse(status, headers, rest[:n]) if len(rest) >= n else None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        if not rest.endswith(b"0\r\n\r\n"):
            return None
        return RawResponse(status, headers, _dechunk(rest))
    return None  # read to EOF: the caller decides


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


def exchange(port: int, data: bytes, timeout_s: float = 10.0) -> RawResponse | None:
    """Blocking: send ``data`` on a fresh connection and read the first response (None: the
    server closed without one).  Raises ``TimeoutError`` after ``timeout_s`` of waiting."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):  # it may answer and close before reading it all
            sock.sendall(data)
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                message = f"no complete response within {timeout_s} s: {got[:200]!r}"
                raise TimeoutError(message) from None
            got += chunk
            parsed = parse_response(got, head_request=data.startswith(b"HEAD "))
            if parsed is not None:
                return parsed
            if not chunk:
                if not got:
                    return None
                head, _, body = got.partition(b"\r\n\r\n")
                resp = parse_response(head + b"\r\nContent-Length: 0\r\n\r\n")
                return None if resp is None else RawResponse(resp.status, resp.headers, body)


async def async_exchange(port: int, data: bytes, timeout_s: float = 10.0) -> RawResponse | None:
    return await asyncio.to_thread(exchange, port, data, timeout_s)


def assert_openai_error(resp: RawResponse | None, status: int | None = None) -> dict[str, Any]:
    assert resp is not None, "the server closed without answering"
    if status is None:
        assert 400 <= resp.status < 500, (resp.status, resp.body[:300])
    else:
        assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return dict(err)
