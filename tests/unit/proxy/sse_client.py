"""Reading an SSE response in tests: the decoded JSON events, and whether [DONE] came."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from ascendra_proxy.backends.sse import DONE, SSEDecoder


async def read_events(resp: aiohttp.ClientResponse) -> tuple[list[dict[str, Any]], bool]:
    dec = SSEDecoder()
    events: list[dict[str, Any]] = []
    done = False
    async for data in resp.content.iter_any():
        for payload in dec.feed(data):
            assert not done, "event after [DONE]"
            if payload == DONE:
                done = True
            else:
                events.append(orjson.loads(payload))
    return events, done


def text_of(events: list[dict[str, Any]]) -> str:
    out = []
    for ev in events:
        for ch in ev.get("choices") or ():
            out.append(ch.get("text") or (ch.get("delta") or {}).get("content") or "")
    return "".join(out)
