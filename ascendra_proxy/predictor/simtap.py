"""Training rows from a simulation: a :class:`~.tap.TrainingTap` observing a Simulator.

Theory of operation.  The tap is a :class:`~ascendra_proxy.core.contracts.
LifecycleObserver`; :func:`attach` hands it to :meth:`Simulator.observe
<ascendra_proxy.sim.simulator.Simulator.observe>`, so the simulator reports to it exactly
what the live proxy reports (ticks before the policy sees them, dispatches, tokens of open
attempts, ends).  Under a policy without a monitor tick, the simulator runs
observation-only ticks every ``tick_s`` for it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ascendra_proxy.predictor.dataset import RollingJsonl, TrainingRecorder
from ascendra_proxy.predictor.tap import TrainingTap, facts_for

if TYPE_CHECKING:
    from ascendra_proxy.sim.simulator import Simulator

__all__ = ["attach", "record_to_file"]


def attach(sim: Simulator, recorder: TrainingRecorder, tick_s: float = 0.02) -> TrainingTap:
    """Record training rows while ``sim`` runs; flush the recorder after ``sim.run()``.

    A policy without a monitor tick (the baselines) gets observation-only ticks every
    ``tick_s`` (which only reach the tap)."""
    tap = TrainingTap(recorder, facts_for([b.info for b in sim.backends]))
    sim.observe(tap, tick_s)
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
