"""The learned slack predictor in the live proxy: model file, training rows, retraining.

Theory of operation.  :class:`Learning` carries out the config's ``predictor:`` section
(:class:`~ascendra_proxy.config.PredictorConfig`) with the pieces of
:mod:`ascendra_proxy.predictor`; the policy's decisions are not touched:

* ``model_path``: at start :func:`~ascendra_proxy.predictor.model.load_predictor` loads it
  (a missing or bad file logs a warning and leaves the analytical model answering) and the
  policy gets it through ``use_predictor``.  :meth:`tick` checks the file at most every
  ``reload_check_s`` (one ``stat``, what ``maybe_reload`` does); when it changed, the read
  and parse (tens of milliseconds: the LightGBM boosters) run in the default executor
  thread (``read_changed``) and the model is installed back on the event loop, so a replaced
  file is in use within about a second, and a bad replacement is logged and ignored (the
  previous model keeps answering).  Only a policy that declares a slack predictor
  (``PolicyNeeds.predictor``; it implements ``SwapPredictor``) gets it; under a baseline
  the file is not loaded.
* ``training_data``: a :class:`~ascendra_proxy.predictor.tap.TrainingTap` is the
  gateway's lifecycle observer (``core/contracts.py``): it sees every tick (before the
  policy's tick, on the same snapshots), and the gateway reports dispatches, token
  arrivals (per upstream read, not per token), answers that came whole and ends to it.
  The recorder only buffers lines; every ``flush_s`` :meth:`tick` hands them to one write
  in the default executor thread (a :class:`~ascendra_proxy.predictor.dataset.
  RollingJsonl`, capped at ``max_bytes`` per file), one write at a time so lines stay in
  order.  Under a policy without a tick (the baselines) the ticker runs observation-only
  ticks every ``tick_ms``.
* ``retrain``: a :class:`~ascendra_proxy.predictor.retrain.Retrainer` (one worker process)
  starts a job every ``interval_s``, the first ``interval_s`` after start; a job writes
  ``model_path`` atomically and the next reload check picks it up.  A failed job (too few
  rows, for instance) is logged; the current model stays.

Metrics on the proxy's registry: ``ascendra_predictor_source{source}`` (1 for the source
answering the policy, read at scrape time; both 0 under a baseline); with training data
and ``error_metrics`` under a policy with a predictor, the tap also asks that predictor
the recorded questions and feeds ``ascendra_predictor_error_seconds{target}`` and
``ascendra_predictor_abs_error_over_slo{target}``; and
``ascendra_predictor_training_rows_total{state}``, ``ascendra_predictor_reloads_total``,
``ascendra_predictor_retrains_total{outcome}``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.contracts import Policy, swaps_predictor
from ascendra_proxy.core.predict import SlackPredictor
from ascendra_proxy.predictor.dataset import RollingJsonl, TrainingRecorder
from ascendra_proxy.predictor.metrics import PredictorMetrics, register_source_gauge
from ascendra_proxy.predictor.setup import analytical_fallback
from ascendra_proxy.predictor.tap import TrainingTap, facts_for

if TYPE_CHECKING:
    from ascendra_proxy.predictor.model import LearnedPredictor, PredictorModel
    from ascendra_proxy.predictor.retrain import Retrainer

__all__ = ["Learning"]

log = logging.getLogger(__name__)

PREFIX_BLOCKS_DEFAULT = 65536  # the tap's prefix index size under a policy without one


class Learning:
    def __init__(self, cfg: ProxyConfig, policy: Policy, registry: CollectorRegistry) -> None:
        pc = cfg.predictor
        self._reload_every = pc.reload_check_s
        self._next_reload = float("-inf")
        self._started: float | None = None
        self.predictor: LearnedPredictor | None = None  # the watched model file, if any
        self.tap: TrainingTap | None = None
        self.recorder: TrainingRecorder | None = None
        self.sink: RollingJsonl | None = None
        self.retrainer: Retrainer | None = None
        self.retrains = {"ok": 0, "failed": 0}
        self._pending: list[bytes] = []
        self._writing: asyncio.Future[None] | None = None
        self._reading: asyncio.Future[PredictorModel | None] | None = None
        self._flush_every = 1.0
        self._next_flush = float("-inf")
        self.tick_s: float | None = None  # observation tick for a policy without one

        measured: SlackPredictor | None = None
        if swaps_predictor(policy):
            fallback = analytical_fallback(cfg) if (pc.model_path or pc.training_data) else None
            if pc.model_path is not None and fallback is not None:
                from ascendra_proxy.predictor.model import LearnedPredictor, load_predictor

                loaded = load_predictor(pc.model_path, fallback)
                assert isinstance(loaded, LearnedPredictor)  # watch=True with a path
                self.predictor = loaded
                policy.use_predictor(loaded)
                log.info("slack predictor: %s (model file %s)", loaded.source, pc.model_path)
            measured = self.predictor or fallback
        elif pc.model_path is not None and pc.retrain is None:
            log.warning(
                "policy %s uses no slack predictor: predictor.model_path is not loaded",
                policy.name,
            )

        def source() -> str:
            return policy.predictor_source if swaps_predictor(policy) else "none"

        td = pc.training_data
        metrics = None
        if td is not None and measured is not None and pc.error_metrics:
            metrics = PredictorMetrics(registry, source)
        else:
            register_source_gauge(registry, source)
        if td is not None:
            run_id = "proxy-" + secrets.token_hex(4)  # row ids: unique per proxy run
            self.sink = RollingJsonl(td.path, max_bytes=td.max_bytes, keep=td.keep)
            self.recorder = TrainingRecorder(
                run_id,
                td.horizon_tokens,
                min_interval_s=td.min_interval_s,
                resident_interval_s=td.resident_interval_s,
                max_rows_per_request=td.max_rows_per_request,
            )
            # the tap expects prefix hits as the policy's own index would (if it has one)
            blocks = cfg.policy_needs().prefix_blocks_per_backend or PREFIX_BLOCKS_DEFAULT
            self.tap = TrainingTap(
                self.recorder,
                facts_for(cfg.backend_infos()),
                prefix_blocks_per_backend=blocks,
                predictor=measured,
                metrics=metrics,
            )
            self._flush_every = td.flush_s
            self.tick_s = td.tick_ms / 1000.0
            log.info("recording predictor training rows to %s (run %s)", td.path, run_id)
        if pc.retrain is not None and td is not None and pc.model_path is not None:
            from ascendra_proxy.predictor.retrain import Retrainer

            rt = pc.retrain
            self.retrainer = Retrainer(
                [td.path],
                pc.model_path,
                rt.interval_s,
                quantile=rt.quantile,
                seed=rt.seed,
                holdout=rt.holdout,
                min_rows=rt.min_rows,
            )
        registry.register(_Counters(self))

    # -- the tick -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Flush rows, reload, retrain (the tap observed the tick already, as the gateway's
        lifecycle observer); cheap when nothing is due."""
        if self._started is None:
            self._started = now
        if self.tap is not None and now >= self._next_flush:
            self._next_flush = now + self._flush_every
            self._flush()
        if self.retrainer is not None:
            self._retrain(now)
        if self.predictor is not None and now >= self._next_reload:
            self._next_reload = now + self._reload_every
            self._reload(self.predictor)

    def _reload(self, predictor: LearnedPredictor) -> None:
        """``maybe_reload`` with the read and parse in a worker thread."""
        if self._reading is not None and not self._reading.done():
            return
        if not predictor.needs_reload():
            return
        loop = asyncio.get_running_loop()
        self._reading = loop.run_in_executor(None, predictor.read_changed)

        def install(fut: asyncio.Future[PredictorModel | None]) -> None:
            if fut.cancelled():
                return
            if fut.exception() is not None:
                log.warning("predictor model not reloaded: %s", fut.exception())
            elif (model := fut.result()) is not None:
                predictor.install(model)  # on the event loop: predict never sees half

        self._reading.add_done_callback(install)

    def _retrain(self, now: float) -> None:
        r = self.retrainer
        assert r is not None and self._started is not None
        outcome = r.poll()
        if outcome is not None:
            self.retrains["ok" if outcome.ok else "failed"] += 1
            if outcome.ok:
                self._next_reload = now  # pick the new file up at once
        if now - self._started >= r.interval_s:
            r.maybe_start(now)

    # -- training rows to disk, off the event loop ---------------------------------------

    def _flush(self) -> None:
        if self.recorder is None or self.sink is None:
            return
        self._pending.extend(self.recorder.take_lines())
        if not self._pending or (self._writing is not None and not self._writing.done()):
            return
        lines, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(None, self.sink.write_lines, lines)
        self._writing.add_done_callback(_log_write_error)

    async def close(self) -> None:
        """Write what is buffered and stop the retraining worker (off the event loop)."""
        for fut in (self._reading, self._writing):
            if fut is not None:
                await asyncio.gather(fut, return_exceptions=True)
        if self.recorder is not None and self.sink is not None:
            lines = self._pending + self.recorder.take_lines()
            self._pending = []
            if lines:
                try:
                    await asyncio.to_thread(self.sink.write_lines, lines)
                except OSError as e:
                    log.warning("training rows not written: %s", e)
        if self.retrainer is not None:
            await asyncio.to_thread(self.retrainer.close)


def _log_write_error(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("training rows not written: %s", fut.exception())


class _Counters(Collector):
    """Training rows, model reloads and retraining runs, read at scrape time."""

    def __init__(self, learning: Learning) -> None:
        self._l = learning

    def collect(self) -> Iterator[Metric]:
        lr = self._l
        rec = lr.recorder
        if rec is not None:
            fam = CounterMetricFamily(
                "ascendra_predictor_training_rows",
                "Training rows recorded (observed), labelled, or dropped (censored)",
                labels=["state"],
            )
            fam.add_metric(["observed"], rec.rows_observed)
            fam.add_metric(["labelled"], rec.rows_labelled)
            fam.add_metric(["censored"], rec.rows_censored)
            yield fam
        if lr.predictor is not None:
            yield CounterMetricFamily(
                "ascendra_predictor_reloads",
                "Predictor model files loaded after start (the file changed)",
                value=lr.predictor.reloads,
            )
        if lr.retrainer is not None:
            fam = CounterMetricFamily(
                "ascendra_predictor_retrains",
                "Finished retraining jobs by outcome",
                labels=["outcome"],
            )
            for outcome, n in sorted(lr.retrains.items()):
                fam.add_metric([outcome], n)
            yield fam
