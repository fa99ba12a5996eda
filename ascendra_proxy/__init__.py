"""ascendra-proxy: an SLO-aware OpenAI-compatible proxy in front of vLLM and SGLang pools."""

__version__ = "0.1.0"
