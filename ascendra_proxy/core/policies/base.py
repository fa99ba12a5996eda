"""Shared scaffolding for policies that only route (the baselines).

A route-only policy decides at dispatch time and nothing else: it has no tick
(``tick_interval_s = None``, ``tick`` returns no actions) and ignores finishes.
Subclasses implement ``route`` and set ``name``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ascendra_proxy.core.backend import BackendSnapshot
from ascendra_proxy.core.decisions import Action
from ascendra_proxy.core.request import RequestState

__all__ = ["RouteOnly"]


class RouteOnly:
    tick_interval_s: float | None = None

    def on_finish(self, req: RequestState, now: float) -> None:
        return None

    def tick(
        self, now: float, requests: Sequence[RequestState], backends: Sequence[BackendSnapshot]
    ) -> Sequence[Action]:
        return ()
