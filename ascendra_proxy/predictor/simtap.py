"""Training rows from a simulation: attach a :class:`~.tap.TrainingTap` to a Simulator.

Theory of operation.  :func:`attach` wraps four methods of the simulator's proxy object
(the instance's, not the class's): ``tick`` observes the requests as the policy is about
to see them, ``dispatch`` notes each attempt (and that a request with an attempt moved),
``on_outputs`` labels rows with the tokens of open attempts (a closed attempt's or a
warm-up's outputs are not the request's), and ``end`` closes the request's rows.  Under a
policy without a monitor tick, the tap schedules observation-only TICK events.  It reads
only public attributes of the simulator (``proxy.flights``, ``proxy.snapshots``, a
flight's ``attempt``), so the simulator needs no change; a first-class observer hook in
``sim/`` would make this a few explicit calls (see the predictor package notes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ascendra_proxy.predictor.dataset import RollingJsonl, TrainingRecorder
from ascendra_proxy.predictor.tap import TrainingTap, facts_for

if TYPE_CHECKING:
    from ascendra_proxy.sim.simulator import Simulator

__all__ = ["attach", "record_to_file"]


def attach(sim: Simulator, recorder: TrainingRecorder, tick_s: float = 0.02) -> TrainingTap:
    """Record training rows while ``sim`` runs; flush the recorder after ``sim.run()``.

    A policy without a monitor tick (the baselines) gets observation-only ticks every
    ``tick_s`` (the simulator's own TICK events, which then only reach the tap)."""
    from ascendra_proxy.sim.events import Kind

    proxy = sim.proxy
    own_ticks = sim.policy.tick_interval_s is None
    tap = TrainingTap(recorder, facts_for([b.info for b in sim.backends]))
    attempts: dict[str, tuple[str, Any]] = {}  # engine id -> (request id, attempt)
    tick, dispatch, on_outputs, end = proxy.tick, proxy.dispatch, proxy.on_outputs, proxy.end

    def tick_hook(now: float) -> None:
        states = [f.state for f in proxy.flights.values()]
        tap.on_tick(now, states, proxy.snapshots(now))
        if not own_ticks:
            tick(now)
        elif not sim.done:
            sim.queue.push(now + tick_s, Kind.TICK, 0)

    def dispatch_hook(now: float, f: Any, d: Any) -> None:
        old = f.attempt
        if old is not None:
            attempts.pop(old.engine_id, None)
            tap.on_moved(f.id)
        dispatch(now, f, d)
        tap.on_dispatched(f.id, d.priority)
        a = f.attempt
        if a is not None:
            attempts[a.engine_id] = (f.id, a)

    def outputs_hook(now: float, outputs: Sequence[Any]) -> None:
        for out in outputs:
            entry = attempts.get(out.request_id)
            if entry is None:
                continue
            rid, a = entry
            if a.open:
                tap.on_tokens(rid, now, len(out.new_token_ids), a.backend.name)
        on_outputs(now, outputs)

    def end_hook(now: float, f: Any, outcome: Any, error: str | None = None) -> None:
        a = f.attempt
        end(now, f, outcome, error)
        if a is not None:
            attempts.pop(a.engine_id, None)
        tap.on_finished(f.id)

    proxy.tick = tick_hook  # type: ignore[method-assign]
    proxy.dispatch = dispatch_hook  # type: ignore[method-assign]
    proxy.on_outputs = outputs_hook  # type: ignore[method-assign]
    proxy.end = end_hook  # type: ignore[method-assign]
    if own_ticks:
        sim.queue.push(tick_s, Kind.TICK, 0)
    return tap


def record_to_file(
    sim: Simulator,
    path: str | os.PathLike[str],
    run_id: str,
    max_bytes: int = 256 << 20,
    keep: int = 4,
    horizon_tokens: int = 32,
) -> TrainingRecorder:
    """``attach`` with a recorder writing to a rolling JSONL file (what ``simulate
    --training-data PATH`` needs); call ``.flush()`` on the result after ``sim.run()``.
    ``run_id`` must differ between runs appending to the same file (it prefixes row ids)."""
    rec = TrainingRecorder(
        run_id, horizon_tokens, sink=RollingJsonl(path, max_bytes=max_bytes, keep=keep)
    )
    attach(sim, rec)
    return rec
