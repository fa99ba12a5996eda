"""Periodic retraining in a worker process, never on the event loop.

Theory of operation.  :class:`Retrainer` owns at most one job at a time in a one-worker
``ProcessPoolExecutor`` (``spawn`` start method: the proxy's process has an event loop and
threads, which a forked child must not inherit).  The job (:func:`retrain_job`, a plain
module-level function) reads the training rows, trains, and writes the model file
atomically (temporary file + rename in the same directory), so the proxy's
``LearnedPredictor.maybe_reload`` sees either the old file or the complete new one and
swaps the model in at its next tick.  The driver calls :meth:`Retrainer.maybe_start` from
its tick with its own ``now`` (nothing here reads a clock) and :meth:`Retrainer.poll` to
collect the outcome (a report, or the error, which is logged; the old model stays).  The
returned ``Future`` can also be awaited with ``asyncio.wrap_future``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["RetrainOutcome", "Retrainer", "retrain_job"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    ok: bool
    report: dict[str, Any] | None
    error: str | None


def retrain_job(
    data: Sequence[str], out: str, quantile: float, seed: int, holdout: float, min_rows: int
) -> dict[str, Any]:
    """Train on ``data`` and write ``out`` atomically; returns the report.  Raises
    ``ValueError`` when there are fewer than ``min_rows`` labelled rows."""
    from ascendra_proxy.predictor.cli import write_atomic
    from ascendra_proxy.predictor.rows import read_rows
    from ascendra_proxy.predictor.train import train

    rows = read_rows(data)
    if len(rows) < min_rows:
        raise ValueError(f"only {len(rows)} labelled rows, need {min_rows} to retrain")
    result = train(rows, quantile=quantile, seed=seed, holdout=holdout)
    write_atomic(out, result.model_bytes)
    return result.report


class Retrainer:
    def __init__(
        self,
        data: Sequence[str | os.PathLike[str]],
        out: str | os.PathLike[str],
        interval_s: float,
        quantile: float = 0.9,
        seed: int = 0,
        holdout: float = 0.2,
        min_rows: int = 5000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._args = ([str(p) for p in data], str(out), quantile, seed, holdout, min_rows)
        self.interval_s = interval_s
        self._pool: ProcessPoolExecutor | None = None
        self._job: Future[dict[str, Any]] | None = None
        self._last_start: float | None = None
        self.runs = 0

    @property
    def running(self) -> bool:
        return self._job is not None and not self._job.done()

    def maybe_start(self, now: float) -> Future[dict[str, Any]] | None:
        """Start a job when none runs and ``interval_s`` passed since the last start."""
        if self._job is not None or (
            self._last_start is not None and now - self._last_start < self.interval_s
        ):
            return None
        return self.start(now)

    def start(self, now: float) -> Future[dict[str, Any]]:
        if self._job is not None:
            return self._job
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        self._last_start = now
        self.runs += 1
        self._job = self._pool.submit(retrain_job, *self._args)
        return self._job

    def poll(self) -> RetrainOutcome | None:
        """The finished job's outcome (once), or None while none finished."""
        job = self._job
        if job is None or not job.done():
            return None
        self._job = None
        try:
            report = job.result()
        except Exception as e:  # the worker's error, reported not raised
            log.warning("predictor retraining failed: %s", e)
            return RetrainOutcome(False, None, f"{type(e).__name__}: {e}")
        log.info("predictor retrained: model written to %s", self._args[1])
        return RetrainOutcome(True, report, None)

    def close(self) -> None:
        """Stop the worker (a running job is cancelled if it has not started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._job = None
