"""The ``ascendra`` policy: the Ascendra LP/HP design, run from outside the engines.

Design note
===========

What it does
------------
Backends are split by role into a throughput pool (**LP**, earliest deadline first) and a
small urgency pool (**HP**).  Every request has a TTFT deadline ``arrival + ttft_slo`` and
a mean-TBT budget (the paper's success criterion: TTFT <= SLO and mean TBT <= SLO).  A fresh
request enters HP only through the paper's *ticket*; otherwise it goes to LP, ordered by
deadline either in the proxy (``lp_ordering: proxy_queue``: one global EDF queue, bound
late to the LP backend that has room) or in the engine (``engine_priority``: dispatched at
once with an integer priority from its deadline).  A monitor tick (``tick_ms``) asks a
slack predictor about every request that has not produced its first token and *offloads*
the ones that would miss their deadline to HP (when HP is predicted to make it in time),
ordered as HP serves them (most urgent first).  Beyond the paper: streams whose mean TBT is
heading over the SLO *migrate* when the predicted benefit exceeds the re-prefill cost, streams on a
failed backend always move, the HP target is the one with the best expected prefix-cache
hit, HP can be *warmed* ahead of an offload, and backends can change role at run time.

Rules and constants (origin: [paper] = the authors' artifact, see
``../shared/research/paper.md``; [ours] = this implementation's choice)
-------------------------------------------------------------------------------------------
===========================  =============================================================
EDF key                      latest start ``deadline - est_prefill`` [paper: value
                             ``1/(SLO - (waited + est_prefill))``, same order]; est_prefill
                             = the analytical prefill time of the prompt alone, once
Offload rule (``predicted``) ``now + predicted_ttft_here + Δ > deadline`` [ours]
Offload rule (``paper``)     ``waited + max(T̂(step), est_prefill) + Δ > SLO`` [paper]
Δ                            ``min(margin_s = 0.7 s [paper, Llama-8B],
                             margin_max_frac = 0.3 [ours] × TTFT SLO)`` (see params.py)
Offload target feasibility  by default only requests HP is predicted to serve in time are
                             offloaded [ours; the paper offloads all, ``infeasible: true``]
HP ordering                  feasible by latest start, then infeasible [paper]; engine
                             priority = latest start in ms, infeasible + 2**30 [ours]
LP ordering                  EDF by latest start across SLO classes; requests already past
                             it go last [ours; the paper serves them first,
                             ``lp_infeasible_last: false``], and so do the ones
                             Moore-Hodgson's rule sacrifices to maximise the on-time count
                             (``lp_moore_hodgson``) [ours]
LP choice                    least predicted time to the first token in prefill work: (queued
                             uncached tokens + own uncached tokens) x the engine's time per
                             prefill token; the expected prefix hit comes from the proxy's
                             prefix index, so a conversation follows its prefix [ours]
Admission                    late on every engine (LP at its serving position, HP) and no
                             engine idle: refused with 429 + Retry-After if the request's SLO
                             class opted in (``on_late: refuse``), else kept last
                             (``core.admission``, shared with the drivers) [ours]
Ticket                       nothing waiting, running < 0.5 × max_num_seqs, KV free >
                             10% [paper]; a freed ticket goes to the held EDF head [ours]
LP room (proxy_queue)        queued prompt tokens still to prefill (expected cache hits
                             left out) < 2 × max_num_batched_tokens and running <
                             max_num_seqs [ours]
Tight TBT                    a request whose mean-TBT SLO no LP step meets (a full mixed
                             step) goes to an HP backend whose step does, e.g. one with a
                             smaller max_num_batched_tokens (``tbt_placement``) [ours]
Migration                    mean(stay) > TBT SLO, mean(move) <= SLO, gain >= 0.05 s,
                             horizon 32 tokens, 1 per request, 8 per tick, 128 streams
                             reviewed per tick in rotation [ours]
Warming                      off by default; TTFT slack < Δ + 0.3 s, prompt >= 256 [ours]
Adaptive roles               grow HP at util >= 0.8 and >= 1 offload/s/HP, shrink at
                             <= 0.25 and <= 0.1/s with LP util >= 0.5; hold 5 s,
                             cooldown 30 s, drain <= 30 s [ours]; the paper is static
===========================  =============================================================

What a driver (proxy or simulator) must do
------------------------------------------
* Give every admitted request to ``route`` (fresh, after a failure with ``exclude``, or a
  stream whose backend failed: ``req.tokens > 0`` means "continue elsewhere").
  ``Dispatch`` -> send it (with ``priority`` when not None: vLLM convention, lower first;
  None means the engine runs FCFS and must get no priority field).  ``Hold`` -> keep it
  queued; the policy releases it with an ``Assign`` from ``tick`` (asking ``route`` again
  for a held request is harmless and answers ``Hold``).  ``Reject`` -> end it with that error.
* Call ``tick(now, requests, snapshots)`` every ``tick_interval_s`` with **every**
  unfinished request (the policy reconciles its held queue and records with that list) and
  carry out the actions in order, through :func:`ascendra_proxy.core.driver.carry_out`
  (which decides, for every driver alike, what each action means given the request's
  state; in short):

  - ``Assign(id, Dispatch)``: a held request goes to ``dispatch.backend``.
  - ``Move(id, Dispatch, "offload")``: the request has no token yet; if it is on an engine,
    abort it there (close the stream), then send the *whole* request to the target.  Its
    TTFT still counts from its original arrival.  If a first token arrived meanwhile,
    carry it out as a migration instead.
  - ``Move(id, Dispatch, "migrate")``: abort it where it streams and send the token-exact
    continuation (prompt ids + generated ids, remaining ``max_tokens``, same sampling)
    to the target; the client keeps one stream.
  - ``Drop(id, Reject)``: end the request with that error (HTTP 429 ``deadline_unreachable``
    with ``Retry-After: reject.retry_after_s`` for a refusal; outcome ``shed``); if it is on
    an engine, abort it there.
  - ``Warm(id, backend)``: send that request's prompt to ``backend`` as a separate
    ``max_tokens=1`` generation and discard it (fills the prefix cache; not the request).
  - ``SetRole(backend, role, draining)``: mirror the role in metrics/status; nothing else
    (the policy already stops sending old-role work to a draining backend).

  Count every action by its ``reason`` (a short, stable label; all listed in
  :class:`~.actions.Reason`); ``detail`` is free text for logs.
* Call ``on_finish`` exactly once per request.  Provide prompt block hashes (see
  :func:`ascendra_proxy.core.prefix.block_hashes`) as ``req.prefix_hashes`` to get
  prefix-affinity and warming (without them both are simply inactive).
* Swap in the learned slack predictor with ``use_predictor`` (it must implement
  :class:`~ascendra_proxy.core.predict.SlackPredictor`); ``predictor_source`` says which
  one is active.  The registry declares all of this (``PolicyNeeds``: roles, predictor,
  prefix hashes, SLO classes, tick, latency profiles); the factory receives the backends'
  latency profiles as values from the driver.

Evidence for the two departures from the paper (simulator, 3 x A100 Llama-3-8B as 2 LP +
1 HP, Splitwise conv trace, Poisson, TTFT 1 s / TBT 150 ms, 800 requests; attainment at
32 / 36 req/s): paper-like settings 0.80 / 0.64, rescue-only offloads 0.90 / 0.64,
rescue-only + infeasible-last 0.93 / 0.72; ``least_loaded`` 0.93 / 0.69.  Small runs: the
simulator issue owns the real capacity comparison.

Modules: ``params`` (config), ``actions`` (Warm, SetRole, reasons), ``state`` (records,
EDF queue), ``view``/``ctx`` (per-decision backend view and bookkeeping), ``lp``, ``hp``,
``review`` (the tick's typed question rows, one predictor call), ``order`` (serving order
of the held queue), ``offload`` (offload, warm, shed), ``migrate``, ``roles``, ``targets``
(batched predictor questions), ``tickstate`` (one pass over the requests), ``policy``.
"""

from ascendra_proxy.core.policies.ascendra.actions import AscendraAction, Reason, SetRole, Warm
from ascendra_proxy.core.policies.ascendra.params import AscendraParams
from ascendra_proxy.core.policies.ascendra.policy import AscendraPolicy, make_ascendra

__all__ = [
    "AscendraAction",
    "AscendraParams",
    "AscendraPolicy",
    "Reason",
    "SetRole",
    "Warm",
    "make_ascendra",
]
