"""Which backends may take a request, and what to say when none may (shared by policies).

Rule, in order: a backend must serve the request's model, be healthy, not be in
``exclude`` (backends that already failed this request) and have room under the proxy's
in-flight cap.  When nothing is left the answer explains the first filter that emptied the
set:

=============================  ===========================================================
nothing serves the model       ``Reject(404, "model_not_found")``, reason ``unknown_model``
all serving ones unhealthy     ``Reject(503, "no_healthy_backend")``, reason ``no_healthy_backend``
the healthy ones all excluded  ``Reject(503, "no_healthy_backend")``, reason ``all_excluded``
the rest are at their cap      ``Hold``, reason ``all_backends_full`` (retry at the next tick)
=============================  ===========================================================

The order of the input is kept, so callers can rely on it for deterministic tie-breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Hold, Reject

__all__ = ["eligible"]


def eligible(
    model: str, backends: Sequence[BackendSnapshot], exclude: frozenset[str]
) -> list[BackendSnapshot] | Reject | Hold:
    """The backends that may take a request for ``model``, or why there are none."""
    serving = [b for b in backends if b.serves(model)]
    if not serving:
        return Reject(404, "model_not_found", f"model {model!r} is not served", "unknown_model")
    healthy = [b for b in serving if b.healthy]
    if not healthy:
        return Reject(
            503, "no_healthy_backend", f"no healthy backend serves {model!r}", "no_healthy_backend"
        )
    allowed = [b for b in healthy if b.name not in exclude]
    if not allowed:
        return Reject(
            503,
            "no_healthy_backend",
            f"every healthy backend for {model!r} failed this request",
            "all_excluded",
        )
    with_room = [b for b in allowed if b.has_room]
    if not with_room:
        return Hold("all_backends_full", f"{len(allowed)} backend(s) at their in-flight cap")
    return with_room
