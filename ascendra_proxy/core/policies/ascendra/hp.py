"""High-priority pool rules: the ticket, admission of migrated streams, target choice.

Theory of operation.

* **Ticket** [paper]: an HP backend accepts a *fresh* request only when nothing waits on it
  (the proxy has no not-started request there and the fresh scrape shows an empty waiting
  queue), it runs fewer than ``running_frac * max_num_seqs`` sequences (the proxy's
  in-flight count or the scraped running count, whichever is larger) and, when the engine
  reports KV usage, more than ``kv_free`` of its KV blocks are free.  Unknown gauges do not
  block a ticket: the proxy's own counts always exist.
* **Offloads** are always accepted [paper]: every healthy, non-draining HP backend serving
  the model is a candidate, without any load test.
* **Migrated streams** [ours] are accepted while the HP runs fewer than
  ``migration.hp_running_frac * max_num_seqs`` and the ticket's KV test passes: a stream
  rescued from a slow LP must not slow HP's own streams.
* **Choice among candidates** [ours]: the smallest predicted time to the request's next
  token there (the predictor sees each candidate's queue and the expected prefix-cache hit
  from :class:`~ascendra_proxy.core.prefix.PrefixIndex`), then the larger hit, then the
  snapshot order.  :func:`pick` is that rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from ascendra_proxy.core.policies.ascendra.params import TicketParams
from ascendra_proxy.core.policies.ascendra.view import BackendState

__all__ = ["accepts_migration", "pick", "ticket_refusal"]


def ticket_refusal(b: BackendState, p: TicketParams, max_age_s: float) -> str | None:
    """None when ``b`` grants a ticket for a fresh request, else the reason it does not."""
    if b.unstarted > 0 or b.queued_tokens > 0:
        return "queue_not_empty"
    if b.engine_waiting(max_age_s) > 0:
        return "engine_waiting"
    if b.running(max_age_s) >= p.running_frac * b.max_num_seqs:
        return "running_high"
    free = b.kv_free(max_age_s)
    if free is not None and free <= p.kv_free:
        return "kv_low"
    return None


def accepts_migration(
    b: BackendState, running_frac: float, kv_free_min: float, max_age_s: float
) -> bool:
    """Whether HP backend ``b`` may take one more migrated stream."""
    if b.running(max_age_s) >= running_frac * b.max_num_seqs:
        return False
    free = b.kv_free(max_age_s)
    return free is None or free > kv_free_min


def pick(
    candidates: Sequence[BackendState], predicted_s: Sequence[float], hits: Sequence[int]
) -> int:
    """Index of the best candidate: least predicted time, then most cached, then first."""
    best = 0
    for i in range(1, len(candidates)):
        if (predicted_s[i], -hits[i]) < (predicted_s[best], -hits[best]):
            best = i
    return best
