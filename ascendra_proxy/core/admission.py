"""Admission under overload: the one rule for requests that can no longer meet their TTFT.

Theory of operation.  Every request carries its SLO class's choice for being *late*
(:attr:`~ascendra_proxy.core.slo.SLO.on_late`): ``"keep"`` (the default: late is better
than never, so it stays and is served after every request that can still make it) or
``"refuse"`` (the client opted in to a fast ``429`` it can retry elsewhere or later).

:func:`admission` is the rule, shared by every place that sheds (a policy's review of
held and not-started requests, the proxy's and the simulator's held queue)::

    ADMIT      now + best predicted TTFT on any engine <= deadline
    ADMIT      some engine serving the model is idle (its first token comes next anyway)
    REFUSE     otherwise, when the request's class opted in (on_late == "refuse")
    KEEP_LAST  otherwise

A refusal is a :class:`~ascendra_proxy.core.decisions.Reject` built by :func:`shed`:
HTTP 429, code ``deadline_unreachable``, reason ``shed`` and a ``Retry-After`` from the
queue (:func:`retry_after_s`: the predicted wait of a request arriving now, at least 1 s,
at most :data:`RETRY_AFTER_MAX_S`).  Drivers end it with the outcome ``shed``, which counts
as a miss in every attainment figure.
"""

from __future__ import annotations

import math
from enum import Enum

from ascendra_proxy.core.decisions import Reject
from ascendra_proxy.core.request import RequestState

__all__ = [
    "RETRY_AFTER_MAX_S",
    "SHED_CODE",
    "SHED_REASON",
    "Verdict",
    "admission",
    "is_shed",
    "retry_after_s",
    "shed",
]

SHED_CODE = "deadline_unreachable"
SHED_REASON = "shed"
RETRY_AFTER_MAX_S = 60


class Verdict(Enum):
    ADMIT = "admit"
    KEEP_LAST = "keep_last"
    REFUSE = "refuse"


def admission(req: RequestState, now: float, best_ttft_s: float | None, any_idle: bool) -> Verdict:
    """The rule above.  ``best_ttft_s``: the least predicted time to the first token over
    every engine that could take ``req`` (None: no prediction, judge by the deadline alone)."""
    wait = 0.0 if best_ttft_s is None else best_ttft_s
    if now + wait <= req.ttft_deadline or any_idle:
        return Verdict.ADMIT
    return Verdict.REFUSE if req.slo.on_late == "refuse" else Verdict.KEEP_LAST


def retry_after_s(backlog_s: float) -> int:
    """Whole seconds a refused client should wait: the queue's predicted wait, bounded."""
    if not math.isfinite(backlog_s):
        return RETRY_AFTER_MAX_S
    return int(min(max(math.ceil(backlog_s), 1), RETRY_AFTER_MAX_S))


def shed(req: RequestState, now: float, backlog_s: float) -> Reject:
    """The refusal of ``req``: 429 with a Retry-After derived from ``backlog_s``."""
    late = now - req.ttft_deadline
    when = f"{late:.2f} s past" if late >= 0 else f"due in {-late:.2f} s, predicted later"
    retry = retry_after_s(backlog_s)
    # the message starts with the code: clients that keep only the message can still count
    message = (
        f"{SHED_CODE}: overloaded, no backend can give this request its first token within "
        f"its {req.slo.ttft_s:g} s TTFT objective ({when}); retry after {retry} s"
    )
    return Reject(429, SHED_CODE, message, SHED_REASON, retry)


def is_shed(reject: Reject) -> bool:
    return reject.code == SHED_CODE
