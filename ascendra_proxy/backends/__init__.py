"""Engine adapters for the proxy: request building, SSE parsing, abort, /metrics scrape.

``adapter_for(engine)`` returns the shared, stateless adapter of an engine kind.
"""

from __future__ import annotations

from ascendra_proxy.backends.base import EngineAdapter
from ascendra_proxy.backends.sglang import SGLangAdapter
from ascendra_proxy.backends.vllm import VLLMAdapter

_ADAPTERS: dict[str, type[VLLMAdapter] | type[SGLangAdapter]] = {
    "vllm": VLLMAdapter,
    "sglang": SGLangAdapter,
}


def adapter_for(engine: str) -> EngineAdapter:
    try:
        return _ADAPTERS[engine]()
    except KeyError:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(_ADAPTERS)})") from None
