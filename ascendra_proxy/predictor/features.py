"""The feature schema: one :class:`~ascendra_proxy.core.predict.QueryBatch` -> one float32 matrix.

Theory of operation.  The learned predictor answers the same batched question as the
analytical model (see :mod:`ascendra_proxy.core.predict`), so its inputs are exactly what a
``QueryBatch`` holds: per-row columns (the request's progress and where it would sit in the
backend's queue) and per-backend features (the proxy's exact counts, the scraped gauges with
their age, the backend's observed step time, its engine limits).  :class:`FeatureBuilder`
turns a batch into a C-contiguous ``float32`` matrix of ``len(FEATURE_NAMES)`` columns:

* backend columns are computed once per backend (a handful of Python attribute reads per
  backend) into a small table, then gathered by ``backend_index`` (one fancy index);
* row columns are copied straight from the batch's numpy columns;
* derived columns (tokens to prefill before the next token, in steps of the token budget;
  prefill work queued behind; engine-waiting requests unknown to the proxy) are a few
  vectorised operations;
* the analytical model's own answer (``ttft``, ``next_k`` per token) and its step costs are
  inputs too: the trees learn corrections to a physically sensible estimate rather than the
  whole queueing behaviour from scratch, which keeps the model small (fast to evaluate).

Missing values (never scraped, no observed step time, an unknown role or profile) are NaN,
which LightGBM routes as missing.  The schema is versioned: :data:`SCHEMA_VERSION` and
:data:`FEATURE_NAMES` are stored in every model file, and a model whose schema differs is
refused when it is loaded (see :mod:`.model`).  Change a column, bump the version.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ascendra_proxy.core.predict import AnalyticalPredictor, Prediction, QueryBatch

__all__ = ["FEATURE_NAMES", "ROLE_CODES", "SCHEMA_VERSION", "FeatureBuilder", "Matrix"]

Matrix = npt.NDArray[np.float32]

SCHEMA_VERSION = 1

ROLE_CODES = {"lp": 0.0, "hp": 1.0, "mixed": 2.0}

_ROW = (
    "prompt_tokens",
    "generated_tokens",
    "waited_s",
    "queued_ahead_tokens",
    "cached_tokens",
    "resident",
    "prefill_tokens",
)
_BACKEND = (
    "role",
    "profile",
    "inflight",
    "unstarted",
    "unstarted_tokens",
    "decode_seqs",
    "decode_context_tokens",
    "scraped_running",
    "scraped_waiting",
    "scraped_kv_usage",
    "scrape_age_s",
    "recent_step_s",
    "max_num_seqs",
    "max_num_batched_tokens",
    "an_step_decode_s",
    "an_step_mixed_s",
)
_DERIVED = (
    "work_tokens",
    "work_steps",
    "behind_tokens",
    "unknown_waiting",
    "an_ttft_s",
    "an_next_token_s",
)
FEATURE_NAMES: tuple[str, ...] = _ROW + _BACKEND + _DERIVED

_NAN = float("nan")


def _opt(v: float | int | None) -> float:
    return _NAN if v is None else float(v)


class FeatureBuilder:
    """Builds the schema's matrix for a batch; see the module docstring.

    ``profiles`` is the model's profile vocabulary (profile name -> code, stored in the
    model file); a profile outside it is NaN.  ``analytical`` supplies the analytical
    columns (the same model the policy falls back to)."""

    def __init__(self, analytical: AnalyticalPredictor, profiles: Sequence[str] = ()) -> None:
        self.analytical = analytical
        self.profiles = tuple(profiles)
        self._codes = {p: float(i) for i, p in enumerate(self.profiles)}
        self.width = len(FEATURE_NAMES)

    def backend_table(self, batch: QueryBatch) -> npt.NDArray[np.float64]:
        """One row of the ``_BACKEND`` columns per backend of the batch."""
        rows = []
        for f in batch.backends:
            c = self.analytical.costs(f)
            rows.append(
                (
                    ROLE_CODES.get(f.role, _NAN),
                    self._codes.get(f.profile, _NAN),
                    f.inflight,
                    f.unstarted,
                    f.unstarted_tokens,
                    f.decode_seqs,
                    f.decode_context_tokens,
                    _opt(f.running),
                    _opt(f.waiting),
                    _opt(f.kv_usage),
                    _opt(f.scrape_age_s),
                    _opt(f.recent_step_s),
                    f.max_num_seqs,
                    f.max_num_batched_tokens,
                    c.s_dec,
                    c.s_mix,
                )
            )
        if not rows:
            return np.zeros((0, len(_BACKEND)), dtype=np.float64)
        return np.asarray(rows, dtype=np.float64)

    def build(self, batch: QueryBatch, analytical: Prediction | None = None) -> Matrix:
        """The feature matrix (``len(batch)`` x ``width``, float32, C order).

        ``analytical`` is the analytical model's answer for the same batch when the caller
        already has it (it is computed here otherwise)."""
        n = len(batch)
        out = np.empty((n, self.width), dtype=np.float32)
        if n == 0:
            return out
        if analytical is None:
            analytical = self.analytical.predict(batch)
        prompt, gen, cached = batch.prompt_tokens, batch.generated_tokens, batch.cached_tokens
        ahead = batch.queued_ahead_tokens
        prefill = np.maximum(prompt + gen - cached, 0.0)
        resident = batch.resident
        out[:, 0] = prompt
        out[:, 1] = gen
        out[:, 2] = batch.waited_s
        out[:, 3] = ahead
        out[:, 4] = cached
        out[:, 5] = resident
        out[:, 6] = prefill
        j = len(_ROW)
        table = self.backend_table(batch)[batch.backend_index]
        out[:, j : j + len(_BACKEND)] = table
        j += len(_BACKEND)
        budget = np.maximum(table[:, 13], 1.0)
        unstarted, unstarted_tokens, waiting = table[:, 3], table[:, 4], table[:, 8]
        work = np.where(resident, 0.0, ahead + prefill)
        out[:, j] = work
        out[:, j + 1] = work / budget
        out[:, j + 2] = np.where(
            resident, unstarted_tokens, np.maximum(unstarted_tokens - ahead - prefill, 0.0)
        )
        out[:, j + 3] = waiting - unstarted  # NaN when never scraped
        out[:, j + 4] = analytical.ttft_s
        out[:, j + 5] = analytical.next_k_s / max(batch.horizon_tokens, 1)
        return out
