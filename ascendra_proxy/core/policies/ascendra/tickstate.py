"""One pass over the driver's requests at the start of a tick.

Theory of operation.  The driver's :class:`~ascendra_proxy.core.request.RequestState` values
are the truth about phase and backend.  :func:`aggregate` walks them once and

* fills each backend state with the proxy's view of its load: not-started requests (count,
  prompt tokens, and the list the review orders), streaming count and context, observed
  token gaps (one lean loop that only sorts requests into lists, then sums per backend);
* sorts requests into what the tick reviews: streams on healthy LP backends (migration
  candidates), streams and not-started requests on unhealthy backends (to rescue);
* reconciles the policy's state: every QUEUED request is in the held queue (a request the
  driver re-queued after a failure is adopted), nothing else is; tracks of requests the
  driver no longer lists are dropped (``on_finish`` is the normal path; this is the safety
  net that keeps memory bounded if a driver forgets it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ascendra_proxy.core.policies.ascendra.ctx import Ctx
from ascendra_proxy.core.policies.ascendra.params import MigrationParams
from ascendra_proxy.core.policies.ascendra.state import Track
from ascendra_proxy.core.policies.ascendra.view import BackendState
from ascendra_proxy.core.request import Phase, RequestState

__all__ = ["TickInputs", "aggregate"]


@dataclass(slots=True)
class TickInputs:
    now: float
    reqs: dict[str, RequestState] = field(default_factory=dict)
    streams_lp: list[RequestState] = field(default_factory=list)  # on healthy LP backends
    streams_down: list[tuple[RequestState, BackendState]] = field(default_factory=list)
    unstarted_down: list[tuple[RequestState, BackendState]] = field(default_factory=list)
    held_by_model: dict[str, int] = field(default_factory=dict)


def aggregate(
    ctx: Ctx,
    requests: Sequence[RequestState],
    track: Callable[[RequestState], Track],
    mp: MigrationParams,
) -> TickInputs:
    inp = TickInputs(ctx.now)
    reqs, tracks, get_state = inp.reqs, ctx.tracks, ctx.states.get
    queued: list[RequestState] = []
    queued_phase, dispatched, finished = Phase.QUEUED, Phase.DISPATCHED, Phase.FINISHED
    for r in requests:  # the hot loop: keep it lean
        ph = r.phase
        if ph is finished:
            continue
        rid = r.id
        reqs[rid] = r
        if rid not in tracks:
            track(r)
        if ph is queued_phase:
            queued.append(r)
            continue
        b = get_state(r.backend) if r.backend is not None else None
        if b is None:
            continue
        if ph is dispatched:
            b.queue.append(r)
        else:
            b.streams.append(r)
    for b in ctx.states.values():
        _fill(b, inp)
        b.queued_work = sum([max(r.prompt_tokens - tracks[r.id].cached_tokens, 0) for r in b.queue])
    held = ctx.held
    for r in queued:
        held.push(tracks[r.id])
        inp.held_by_model[r.model] = inp.held_by_model.get(r.model, 0) + 1
    _reconcile(ctx, inp, len(queued))
    return inp


def _fill(b: BackendState, inp: TickInputs) -> None:
    """Per-backend sums from its request lists, and what the tick must look at there."""
    q, s = b.queue, b.streams
    b.aggregate(inp.now)
    if not b.snap.healthy:
        inp.unstarted_down.extend((r, b) for r in q)
        inp.streams_down.extend((r, b) for r in s)
        b.queue = []
    elif b.is_lp:
        inp.streams_lp.extend(s)


def _reconcile(ctx: Ctx, inp: TickInputs, queued: int) -> None:
    if len(ctx.held) > queued:
        for rid in ctx.held:
            r = inp.reqs.get(rid)
            if r is None or r.phase is not Phase.QUEUED:
                ctx.held.remove(rid)
    if len(ctx.tracks) > len(inp.reqs):
        for rid in [k for k in ctx.tracks if k not in inp.reqs]:
            del ctx.tracks[rid]
