"""Parameters of the ``ascendra`` policy (the YAML ``policy:`` block), grouped by rule.

Every field documents its origin: **[paper]** constants come from the Ascendra artifact
(see the package docstring); **[ours]** are choices of this implementation.  Ranges are
field metadata (``gt``/``ge``/``lt``/``le``) checked by the config loader; cross-field rules
live in ``validate()``.

YAML::

    policy:
      type: ascendra
      lp_ordering: proxy_queue        # or engine_priority
      tick_ms: 20
      offload: {rule: predicted, margin_s: 0.7, margin_max_frac: 0.7}
      ticket: {running_frac: 0.5, kv_free: 0.10}
      migration: {enabled: true, min_benefit_s: 0.05}
      warming: {enabled: false, lead_s: 0.3}
      roles: static                   # or adaptive (then see `adaptive:`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AdaptiveRoleParams",
    "AscendraParams",
    "MigrationParams",
    "OffloadParams",
    "TicketParams",
    "WarmingParams",
]


@dataclass(frozen=True, slots=True)
class OffloadParams:
    # "predicted": waited + predicted TTFT on the current backend + Δ > TTFT SLO  [ours]
    # "paper": waited + max(T̂(current step), est_prefill) + Δ > TTFT SLO          [paper]
    rule: Literal["predicted", "paper"] = "predicted"
    # Δ = min(margin_s, margin_max_frac * TTFT SLO).  The paper's Δ is 0.7 s for
    # Llama-3.1-8B (0.5 s Mistral-7B, 1.0 s Qwen-14B) with no cap: it stands for the time an
    # offload still needs on HP *and* covers an estimate that ignores the queue ahead. Our
    # predicted TTFT includes the queue, so Δ only has to cover the HP side and the
    # prediction error; and a fixed 0.7 s would offload everything on arrival under a
    # 0.5 s SLO.  Hence the cap, 0.3 x SLO by default (0.3 s at the paper's 1 s SLO,
    # 0.7 s from SLO 2.33 s up).  To reproduce the paper: rule: paper, margin_max_frac: 1.
    margin_s: float = field(default=0.7, metadata={"ge": 0})  # [paper]
    margin_max_frac: float = field(default=0.3, metadata={"ge": 0, "le": 1})  # [ours]
    # Offload requests that miss their deadline even on HP (the paper: yes, HP orders
    # them last).  Default no [ours]: in simulation (3 x A100, Splitwise conv, 1 s / 150 ms)
    # offloading doomed requests flooded HP and cut attainment at 32 req/s from ~0.95 to
    # ~0.80; a request is offloaded only when HP is predicted to meet its deadline.
    infeasible: bool = False


@dataclass(frozen=True, slots=True)
class TicketParams:
    # HP admits a fresh request only while running < running_frac * max_num_seqs   [paper]
    running_frac: float = field(default=0.5, metadata={"gt": 0, "le": 1})
    # ... and more than this share of KV blocks is free                             [paper]
    kv_free: float = field(default=0.10, metadata={"ge": 0, "lt": 1})


@dataclass(frozen=True, slots=True)
class MigrationParams:
    enabled: bool = True
    # Compare staying vs moving over the next N tokens (fewer if max_tokens is near) [ours]
    horizon_tokens: int = field(default=32, metadata={"ge": 2})
    # Streams with fewer tokens left than this are never moved                       [ours]
    min_remaining_tokens: int = field(default=16, metadata={"ge": 1})
    # Move only if the horizon finishes at least this much earlier on the target     [ours]
    min_benefit_s: float = field(default=0.05, metadata={"ge": 0})
    # Abort + reconnect cost charged to every move                                    [ours]
    overhead_s: float = field(default=0.02, metadata={"ge": 0})
    max_per_request: int = field(default=1, metadata={"ge": 0})
    max_per_tick: int = field(default=8, metadata={"ge": 0})
    # HP takes a migrated stream while running < this * max_num_seqs               [ours]
    hp_running_frac: float = field(default=0.75, metadata={"gt": 0, "le": 1})
    # Streams reviewed per tick, in rotation (bounds the tick's cost; with 1,000 streams
    # and 20 ms ticks each stream is looked at every ~160 ms)                         [ours]
    review_per_tick: int = field(default=128, metadata={"ge": 1})


@dataclass(frozen=True, slots=True)
class WarmingParams:
    enabled: bool = False
    # Warm when TTFT slack < Δ + lead_s (the offload is probably coming)             [ours]
    lead_s: float = field(default=0.3, metadata={"ge": 0})
    # Prompts shorter than this are cheap to prefill on HP anyway                    [ours]
    min_prompt_tokens: int = field(default=256, metadata={"ge": 1})
    max_per_tick: int = field(default=4, metadata={"ge": 1})


@dataclass(frozen=True, slots=True)
class AdaptiveRoleParams:
    """When ``roles: adaptive``: move one backend at a time between LP and HP.   [ours]

    HP utilisation is ``running / (ticket.running_frac * max_num_seqs)`` averaged over HP
    backends (1.0: HP stops granting tickets); LP utilisation is in-flight plus held
    requests over the LP pool's ``max_num_seqs``.  A condition must hold for ``hold_s``
    without a break, a change waits ``cooldown_s`` after the previous one, and a backend
    drains (takes no new work of its old role) before its new role takes effect.
    """

    hold_s: float = field(default=5.0, metadata={"ge": 0})
    cooldown_s: float = field(default=30.0, metadata={"ge": 0})
    drain_timeout_s: float = field(default=30.0, metadata={"gt": 0})
    # LP -> HP when HP is this busy and offloads come at least this fast per HP backend
    grow_hp_util: float = field(default=0.8, metadata={"gt": 0})
    grow_offload_rate: float = field(default=1.0, metadata={"ge": 0})
    # HP -> LP when HP is this idle, offloads this rare, and LP this busy
    shrink_hp_util: float = field(default=0.25, metadata={"ge": 0})
    shrink_offload_rate: float = field(default=0.1, metadata={"ge": 0})
    shrink_lp_util: float = field(default=0.5, metadata={"ge": 0})
    # Offload rate is measured over this window
    window_s: float = field(default=10.0, metadata={"gt": 0})
    min_lp: int = field(default=1, metadata={"ge": 1})
    min_hp: int = field(default=1, metadata={"ge": 1})

    def validate(self) -> None:
        if self.shrink_hp_util >= self.grow_hp_util:
            raise ValueError("adaptive.shrink_hp_util must be below adaptive.grow_hp_util")
        if self.shrink_offload_rate > self.grow_offload_rate:
            raise ValueError("adaptive.shrink_offload_rate must not exceed grow_offload_rate")


@dataclass(frozen=True, slots=True)
class AscendraParams:
    # LP ordering: hold requests in one global EDF queue in the proxy and bind them late to
    # an LP backend with room, or dispatch at once with an engine priority from the
    # deadline (engines must run priority scheduling).                              [ours]
    lp_ordering: Literal["proxy_queue", "engine_priority"] = "proxy_queue"
    # Monitor tick period (the issue asks for 10-50 ms).                             [ours]
    tick_ms: float = field(default=20.0, metadata={"ge": 1, "le": 1000})
    # proxy_queue: keep at most this many steps of prefill (x max_num_batched_tokens)
    # dispatched but not started on each LP backend.                                 [ours]
    lp_queue_steps: float = field(default=2.0, metadata={"gt": 0})
    # A request whose mean-TBT SLO no LP step meets goes to an HP backend whose steps do
    # (e.g. one started with a smaller max_num_batched_tokens); see the module tbt. [ours]
    tbt_placement: bool = True
    # Held requests already past their latest start are bound after all others (the
    # paper serves them first on LP; they miss anyway and would make others miss).  [ours]
    lp_infeasible_last: bool = True
    # When not every held request can start in time, sacrifice (serve last) the ones
    # Moore-Hodgson's rule picks, so that the most requests meet their deadline; see
    # the module ``order`` (only with lp_infeasible_last).                          [ours]
    lp_moore_hodgson: bool = True
    # Scraped gauges older than this are ignored.                                   [ours]
    max_scrape_age_s: float = field(default=2.0, metadata={"gt": 0})
    # Engine priority resolution (ms per priority unit).                            [ours]
    priority_resolution_ms: float = field(default=1.0, metadata={"gt": 0})
    # Analytical predictor: step time of a backend without a latency profile that has
    # no observed recent step time.                                                 [ours]
    fallback_step_s: float = field(default=0.03, metadata={"gt": 0})
    # Prefix-affinity record: blocks remembered per backend, tokens per block.     [ours]
    prefix_blocks_per_backend: int = field(default=65536, metadata={"ge": 1})
    offload: OffloadParams = field(default_factory=OffloadParams)
    ticket: TicketParams = field(default_factory=TicketParams)
    migration: MigrationParams = field(default_factory=MigrationParams)
    warming: WarmingParams = field(default_factory=WarmingParams)
    roles: Literal["static", "adaptive"] = "static"
    adaptive: AdaptiveRoleParams = field(default_factory=AdaptiveRoleParams)

    @property
    def tick_s(self) -> float:
        return self.tick_ms / 1000.0

    def validate(self) -> None:
        self.adaptive.validate()
