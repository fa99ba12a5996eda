"""Deadline arithmetic: urgency, slack, the offload margin and engine priorities.

Theory of operation.  Every function here is a pure function of numbers in seconds; the
policy feeds it a request's SLO, its progress and a predictor's answer.

* **TTFT deadline** ``arrival + slo.ttft_s`` (see ``RequestState.ttft_deadline``).
* **Latest start** ``deadline - est_prefill``: the last moment the request's prefill may
  begin and still meet the deadline on an idle engine (``est_prefill`` is the predicted
  prefill time of the request alone, computed once at arrival, as in the paper).  The
  paper's EDF value is ``1 / (TTFT_SLO - (waited + est_prefill))`` and ``+inf`` once that is
  not positive; ordering by value (largest first) is the same as ordering by latest start
  (smallest first), infeasible requests first.  Latest start is static per request, so a
  queue ordered by it never needs re-sorting: that is what the LP queue uses.
* **TTFT slack** ``deadline - (now + predicted_ttft)``: positive means the predictor
  expects the first token in time.
* **Offload margin** Δ: the time an offloaded request still needs on the HP side (its wait
  behind the HP's current step plus its own prefill and the hop).  The paper hard-codes it
  per model (0.7 s for Llama-3.1-8B, with a 1 s TTFT SLO); we cap it at a fraction of the
  request's TTFT SLO so that tight SLOs do not offload every request on arrival.
* **Mean-TBT projection** the paper judges TBT by the mean over the whole stream,
  ``(last - first) / (tokens - 1)``; :func:`projected_mean_tbt` extends that mean by a
  predicted time for more tokens.
* **Engine priorities** are integers, lower runs earlier (vLLM's convention; the SGLang
  adapter flips the sign when needed): milliseconds of a time since an epoch the policy
  picks (:class:`PriorityClock`).  Infeasible work gets a fixed offset that puts it behind
  every feasible request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "INFEASIBLE_PRIORITY_OFFSET",
    "PRIORITY_MAX",
    "PriorityClock",
    "edf_value",
    "latest_start",
    "offload_margin",
    "projected_mean_tbt",
    "ttft_slack",
]

# Priorities stay within a signed 32-bit range so any engine or JSON parser takes them.
PRIORITY_MAX = 2**31 - 1
# Added to the priority of work that cannot meet its deadline anyway (HP: "infeasible last").
INFEASIBLE_PRIORITY_OFFSET = 2**30


def latest_start(deadline: float, est_prefill: float) -> float:
    """The last time the prefill may start and still finish by ``deadline``."""
    return deadline - est_prefill


def edf_value(now: float, deadline: float, est_prefill: float) -> float:
    """The paper's EDF value ``1 / (slack to latest start)``; ``inf`` once infeasible."""
    room = deadline - now - est_prefill
    return math.inf if room <= 0 else 1.0 / room


def ttft_slack(now: float, deadline: float, predicted_ttft: float) -> float:
    """Seconds to spare if the first token comes ``predicted_ttft`` from ``now``."""
    return deadline - (now + predicted_ttft)


def offload_margin(ttft_slo_s: float, margin_s: float, max_frac: float) -> float:
    """Δ for one request: ``min(margin_s, max_frac * ttft_slo_s)``."""
    return min(margin_s, max_frac * ttft_slo_s)


def projected_mean_tbt(
    first_token_at: float, tokens: int, now: float, extra_s: float, extra_tokens: int
) -> float:
    """Mean TBT of the whole stream if ``extra_tokens`` more arrive by ``now + extra_s``."""
    gaps = tokens - 1 + extra_tokens
    if gaps <= 0:
        return 0.0
    return (now + extra_s - first_token_at) / gaps


@dataclass(frozen=True, slots=True)
class PriorityClock:
    """Maps absolute (driver) times to integer engine priorities.

    ``priority(t) = round((t - epoch) / resolution_s)``, clamped to ``[0, PRIORITY_MAX]``.
    The policy picks ``epoch`` (the first ``now`` it sees) and :meth:`rebased` a new one
    when values would approach :data:`INFEASIBLE_PRIORITY_OFFSET` (about 12 days at 1 ms):
    requests queued across a rebase lose their relative order once, for a few seconds.
    """

    epoch: float
    resolution_s: float = 0.001

    def priority(self, t: float, infeasible: bool = False) -> int:
        ticks = round((t - self.epoch) / self.resolution_s)
        ticks = max(0, min(ticks, INFEASIBLE_PRIORITY_OFFSET - 1))
        if infeasible:
            ticks += INFEASIBLE_PRIORITY_OFFSET
        return min(ticks, PRIORITY_MAX)

    def needs_rebase(self, now: float, horizon_s: float) -> bool:
        """True when ``now + horizon_s`` would no longer fit below the infeasible offset."""
        limit = (INFEASIBLE_PRIORITY_OFFSET // 2) * self.resolution_s
        return now + horizon_s - self.epoch > limit

    def rebased(self, now: float) -> PriorityClock:
        return PriorityClock(math.floor(now), self.resolution_s)
