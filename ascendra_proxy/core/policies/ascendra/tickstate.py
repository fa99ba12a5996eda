"""One pass over the driver's requests at the start of a tick.

Theory of operation.  The driver's :class:`~ascendra_proxy.core.request.RequestState` values
are the truth about phase and backend.  :func:`aggregate` walks them once and

* fills each backend state with the proxy's view of its load: not-started requests (count,
  prompt tokens, and the list the review orders), streaming count and context, observed
  token gaps;
* sorts requests into what the tick reviews: streams that may migrate (on healthy LP
  backends, under the per-request migration cap, with enough tokens left), streams and
  not-started requests on unhealthy backends (to rescue);
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
    reqs: dict[str, RequestState] = field(default_factory=dict)
    streams_lp: list[tuple[RequestState, BackendState]] = field(default_factory=list)
    streams_down: list[tuple[RequestState, BackendState]] = field(default_factory=list)
    unstarted_down: list[tuple[RequestState, BackendState]] = field(default_factory=list)
    held_by_model: dict[str, int] = field(default_factory=dict)


def aggregate(
    ctx: Ctx,
    requests: Sequence[RequestState],
    track: Callable[[RequestState], Track],
    mp: MigrationParams,
) -> TickInputs:
    inp = TickInputs()
    states, held = ctx.states, ctx.held
    for st in states.values():
        st.unstarted, st.queued_tokens = 0, 0
    queued = 0
    queued_phase, dispatched, finished = Phase.QUEUED, Phase.DISPATCHED, Phase.FINISHED
    for r in requests:
        ph = r.phase
        if ph is finished:
            continue
        inp.reqs[r.id] = r
        tr = track(r)
        if ph is queued_phase:
            queued += 1
            held.push(tr)
            inp.held_by_model[r.model] = inp.held_by_model.get(r.model, 0) + 1
            continue
        b = states.get(r.backend) if r.backend is not None else None
        if b is None:
            continue
        if ph is dispatched:
            b.unstarted += 1
            b.queued_tokens += r.prompt_tokens
            if b.snap.healthy:
                b.queue.append(r)
            else:
                inp.unstarted_down.append((r, b))
            continue
        b.streaming += 1
        b.decode_context += r.prompt_tokens + r.tokens
        if r.gaps:
            b.gap_sum += r.gap_sum
            b.gaps += r.gaps
        if not b.snap.healthy:
            inp.streams_down.append((r, b))
        elif (
            b.is_lp
            and tr.migrations < mp.max_per_request
            and r.remaining_tokens >= mp.min_remaining_tokens
        ):
            inp.streams_lp.append((r, b))
    _reconcile(ctx, inp, queued)
    return inp


def _reconcile(ctx: Ctx, inp: TickInputs, queued: int) -> None:
    if len(ctx.held) > queued:
        for rid in ctx.held:
            r = inp.reqs.get(rid)
            if r is None or r.phase is not Phase.QUEUED:
                ctx.held.remove(rid)
    if len(ctx.tracks) > len(inp.reqs):
        for rid in [k for k in ctx.tracks if k not in inp.reqs]:
            del ctx.tracks[rid]
