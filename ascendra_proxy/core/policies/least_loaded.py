"""``least_loaded``: send each request to the eligible backend with the least load.

Rule: among the eligible backends (see :mod:`.eligibility`) pick the smallest key

    (inflight, waiting, running, kv_usage, name)

* ``inflight`` is the proxy's own exact count: it decides first, because it is never stale.
* ``waiting``, ``running`` and ``kv_usage`` come from the engine's scraped ``/metrics`` and
  only break ties.  A scraped value older than ``max_scrape_age_s``, or one the engine does
  not export, is *unknown* and ranks after every known value (prefer the backend whose
  load we can see).
* ``name`` makes the choice total, so ties never depend on input order or on chance.

Pool roles are ignored, no engine priority is sent, and nothing happens at ticks.

YAML::

    policy: {type: least_loaded, max_scrape_age_s: 5.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot
from ascendra_proxy.core.decisions import Decision, Dispatch
from ascendra_proxy.core.policies.base import RouteOnly
from ascendra_proxy.core.policies.eligibility import eligible
from ascendra_proxy.core.request import RequestState

__all__ = ["LeastLoaded", "LeastLoadedParams", "load_key", "make_least_loaded"]

_UNKNOWN = math.inf


@dataclass(frozen=True, slots=True)
class LeastLoadedParams:
    # Scraped signals older than this (seconds) are treated as unknown.
    max_scrape_age_s: float = field(default=5.0, metadata={"gt": 0})


def load_key(b: BackendSnapshot, max_scrape_age_s: float) -> tuple[float, float, float, float, str]:
    """The ordering key of one backend (smaller is less loaded)."""
    s = b.fresh_scraped(max_scrape_age_s)
    if s is None:
        return (b.inflight, _UNKNOWN, _UNKNOWN, _UNKNOWN, b.name)
    return (
        b.inflight,
        _UNKNOWN if s.waiting is None else s.waiting,
        _UNKNOWN if s.running is None else s.running,
        _UNKNOWN if s.kv_usage is None else s.kv_usage,
        b.name,
    )


class LeastLoaded(RouteOnly):
    name = "least_loaded"

    def __init__(self, params: LeastLoadedParams) -> None:
        self._max_age = params.max_scrape_age_s

    def route(
        self,
        req: RequestState,
        backends: Sequence[BackendSnapshot],
        now: float,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        allowed = eligible(req.model, backends, exclude)
        if not isinstance(allowed, list):
            return allowed
        keys = sorted(load_key(b, self._max_age) for b in allowed)
        best = keys[0]
        runner_up = keys[1] if len(keys) > 1 else None
        return Dispatch(best[4], "least_loaded", detail=_why(best, runner_up))


_SIGNALS = ("inflight", "waiting", "running", "kv_usage", "name")


def _why(
    best: tuple[float, float, float, float, str],
    runner_up: tuple[float, float, float, float, str] | None,
) -> str:
    """Which signal separated the winner from the runner-up (for logs and traces)."""
    if runner_up is None:
        return "only candidate"
    for signal, a, b in zip(_SIGNALS, best, runner_up, strict=True):
        if a != b:
            return f"lowest {signal}"
    return "tie"  # pragma: no cover - names are unique


def make_least_loaded(
    params: LeastLoadedParams, backends: Sequence[BackendInfo], profiles: Mapping[str, object]
) -> LeastLoaded:
    return LeastLoaded(params)
