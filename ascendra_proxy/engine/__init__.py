"""Step-level model of a continuous-batching serving engine (vLLM v1 semantics). Pure."""
