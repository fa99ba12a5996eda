"""vLLM adapter.

Theory of operation: vLLM's OpenAI server streams ``token_ids`` per chunk when asked with
``return_token_ids`` and a running ``usage`` with ``stream_options.continuous_usage_stats``;
the shared ``OpenAIStreamAdapter`` asks for both and strips them again for clients that did
not.  vLLM has no abort-by-id endpoint on its OpenAI server: closing the HTTP connection
aborts the request at once and frees its KV blocks, so ``abort`` is a no-op and the stream
code closes the connection.  Load comes from ``vllm:`` gauges (current and legacy names).
"""

from __future__ import annotations

from ascendra_proxy.backends.base import OpenAIStreamAdapter
from ascendra_proxy.backends.scrape import VLLM_NAMES, EngineLoad, parse_load


class VLLMAdapter(OpenAIStreamAdapter):
    engine = "vllm"

    def parse_metrics(self, text: str) -> EngineLoad:
        return parse_load(text, VLLM_NAMES)
