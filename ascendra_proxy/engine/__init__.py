"""Step-level model of a continuous-batching serving engine (vLLM v1 semantics). Pure.

Public API: :class:`EngineModel` (``add_request``, ``abort``, ``has_work``, ``step``,
``stats``), :class:`EngineConfig`, :class:`LatencyProfile` / :func:`load_profile`,
:class:`Tokenizer` / :class:`IncrementalDetokenizer`, and the value types of :mod:`.types`.
"""

from .config import EngineConfig, config_for_profile
from .model import EngineModel
from .profile import LatencyProfile, ProfileError, load_profile, prefill_attention_work
from .tokenizer import IncrementalDetokenizer, Tokenizer
from .types import (
    EngineRequest,
    EngineStats,
    FinishReason,
    SamplingSpec,
    StepResult,
    TokenOutput,
)

__all__ = [
    "EngineConfig",
    "EngineModel",
    "EngineRequest",
    "EngineStats",
    "FinishReason",
    "IncrementalDetokenizer",
    "LatencyProfile",
    "ProfileError",
    "SamplingSpec",
    "StepResult",
    "TokenOutput",
    "Tokenizer",
    "config_for_profile",
    "load_profile",
    "prefill_attention_work",
]
