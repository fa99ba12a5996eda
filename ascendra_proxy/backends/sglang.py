"""SGLang adapter.

Theory of operation: SGLang streams the same OpenAI chunk shapes (with explicit nulls) and
takes the same ``return_token_ids`` / ``stream_options`` extras.  Unlike vLLM it notices a
closed client connection only seconds later (its disconnect check runs on a 4 s wait and a
delayed background abort), so the proxy names each request itself with SGLang's ``rid``
field and aborts with ``POST /abort_request {"rid": ...}`` in addition to closing the
connection.  A client-supplied ``rid`` is kept (the client may rely on it) and used for the
abort.  Load comes from ``sglang:`` gauges (needs ``--enable-metrics``).

Priorities reach adapters in vLLM's convention (lower runs first); SGLang's default is the
opposite (higher first), so the adapter negates them.  A server started with
``--schedule-low-priority-values-first`` would need them unchanged (not configurable yet).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ascendra_proxy.backends.base import OpenAIStreamAdapter
from ascendra_proxy.backends.scrape import SGLANG_NAMES, EngineLoad, parse_load

ABORT_TIMEOUT_S = 2.0


class SGLangAdapter(OpenAIStreamAdapter):
    engine = "sglang"
    needs_abort_call = True

    def engine_priority(self, priority: int) -> int:
        return -priority  # SGLang runs higher values first

    def _extra_fields(self, upstream: dict[str, Any], request_id: str) -> str:
        rid = upstream.get("rid")
        if isinstance(rid, str) and rid:
            return rid
        upstream["rid"] = request_id
        return request_id

    async def abort(self, session: aiohttp.ClientSession, base_url: str, request_id: str) -> None:
        timeout = aiohttp.ClientTimeout(total=ABORT_TIMEOUT_S)
        async with session.post(
            base_url + "/abort_request",
            json={"rid": request_id},
            timeout=timeout,
            allow_redirects=False,
        ) as resp:
            await resp.read()

    def parse_metrics(self, text: str) -> EngineLoad:
        return parse_load(text, SGLANG_NAMES)
