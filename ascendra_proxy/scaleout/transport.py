"""WebSocket plumbing shared by workers and the scheduler: addresses and an ordered outbox.

Addresses: ``unix:/path/to/socket`` (one machine) or ``ws://host:port`` (across machines);
the WebSocket endpoint is always ``/ws``.  Frames are binary, one orjson message each.

``Outbox`` lets synchronous code (policy callbacks, the scheduler's state machine) send:
``put`` never blocks, and one writer task drains the queue in order, in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from ascendra_proxy.scaleout.messages import SchedulerMessage, WorkerMessage, encode

__all__ = ["Outbox", "connect", "parse_address"]

log = logging.getLogger(__name__)

WS_PATH = "/ws"
HEARTBEAT_S = 1.0  # a peer silent for about half of this after a ping is gone


def parse_address(address: str) -> tuple[str | None, str]:
    """(unix socket path or None, base URL) for an address; ValueError when unusable."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        path = path[2:] if path.startswith("//") else path
        if not path.startswith("/"):
            raise ValueError(f"unix address needs an absolute path: {address!r}")
        return path, "http://scheduler"
    if address.startswith(("ws://", "http://")):
        return None, "http://" + address.split("://", 1)[1].rstrip("/")
    raise ValueError(f"scheduler address must be unix:/PATH or ws://HOST:PORT, got {address!r}")


async def connect(
    address: str, timeout_s: float
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """Open a WebSocket to a scheduler; the caller closes both the socket and the session."""
    path, base = parse_address(address)
    connector = aiohttp.UnixConnector(path) if path else aiohttp.TCPConnector()
    session = aiohttp.ClientSession(connector=connector)
    try:
        ws = await session.ws_connect(
            base + WS_PATH,
            heartbeat=HEARTBEAT_S,
            timeout=aiohttp.ClientWSTimeout(ws_close=timeout_s),
            max_msg_size=64 * 1024 * 1024,
        )
    except BaseException:
        await session.close()
        raise
    return session, ws


class Outbox:
    """Ordered, non-blocking sends over one WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse | aiohttp.web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="ws-outbox")

    def put(self, msg: WorkerMessage | SchedulerMessage) -> None:
        self._queue.put_nowait(encode(msg))

    async def _drain(self) -> None:
        ws = self._ws
        try:
            while True:
                frame = await self._queue.get()
                await ws.send_bytes(frame)
                while not self._queue.empty():
                    await ws.send_bytes(self._queue.get_nowait())
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.debug("outbox closed: %s", exc)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
