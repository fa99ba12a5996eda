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
  whole queueing behaviour from scratch, which keeps the model small (fast to evaluate);
* **dispatch times** (optional inputs, :data:`EXTRA_INPUTS`): how long the request has
  been on the backend (``on_backend_s``), how long the oldest not-started request there
  has been (``head_age_s``), and how long ago the last request there got its first token
  (``last_first_token_s``).  The proxy cannot see how far an engine got through its
  prefill queue, but it can tell how long the engine has been at the current head: since
  the head was dispatched or since the request before it got its first token, whichever
  is later (``busy_s``).  ``progress_tokens`` (that time the backend's prefill rate) turns
  it into tokens already done, so ``work_left_*`` is the queue still ahead.  The inputs
  come from ``QueryBatch.on_backend_s`` and ``BackendFeatures.oldest_unstarted_s`` /
  ``BackendFeatures.last_first_token_s`` when the policy provides those fields (read with
  ``getattr``: see the package notes), or explicitly (training rows); absent, they and
  what derives from them are NaN, and models are trained to cope (see :mod:`.train`);
* the request's **TTFT SLO** (``slo_ttft_s``, optional like the dispatch times, from
  ``QueryBatch.slo_ttft_s``) and ``slack_s`` (SLO minus time waited): under deadline
  ordering, and a policy that serves requests it cannot save last, how long a held
  request waits depends on its own deadline.

Missing values (never scraped, no observed step time, an unknown role or profile) are NaN,
which LightGBM routes as missing.  The schema is versioned: :data:`SCHEMA_VERSION` and
:data:`FEATURE_NAMES` are stored in every model file, and a model whose schema differs is
refused when it is loaded (see :mod:`.model`).  Change a column, bump the version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ascendra_proxy.core.predict import AnalyticalPredictor, Prediction, QueryBatch

__all__ = [
    "DISPATCH_COLUMNS",
    "EXTRA_INPUTS",
    "FEATURE_NAMES",
    "ROLE_CODES",
    "SCHEMA_VERSION",
    "Extras",
    "FeatureBuilder",
    "Matrix",
]

Matrix = npt.NDArray[np.float32]
Extras = Mapping[str, npt.NDArray[np.float64]]  # per-row values of EXTRA_INPUTS

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
EXTRA_INPUTS = ("on_backend_s", "head_age_s", "last_first_token_s", "slo_ttft_s")
_DISPATCH = (
    *EXTRA_INPUTS,
    "busy_s",
    "progress_tokens",
    "work_left_tokens",
    "work_left_steps",
    "an_ttft_left_s",
    "slack_s",
)
FEATURE_NAMES: tuple[str, ...] = _ROW + _BACKEND + _DERIVED + _DISPATCH
# Columns that are NaN when the dispatch times are not known.
DISPATCH_COLUMNS: tuple[int, ...] = tuple(FEATURE_NAMES.index(n) for n in _DISPATCH)

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
        """Per backend of the batch: the ``_BACKEND`` columns, then the backend-level
        extra inputs (head age, last first token)."""
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
                    _opt(getattr(f, "oldest_unstarted_s", None)),
                    _opt(getattr(f, "last_first_token_s", None)),
                )
            )
        if not rows:
            return np.zeros((0, len(_BACKEND) + 2), dtype=np.float64)
        return np.asarray(rows, dtype=np.float64)

    def build(
        self,
        batch: QueryBatch,
        analytical: Prediction | None = None,
        extras: Extras | None = None,
    ) -> Matrix:
        """The feature matrix (``len(batch)`` x ``width``, float32, C order).

        ``analytical`` is the analytical model's answer for the same batch when the caller
        already has it (it is computed here otherwise); ``extras`` (per row, keys from
        :data:`EXTRA_INPUTS`) override the batch's own dispatch times (training rows)."""
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
        nb = len(_BACKEND)
        out[:, j : j + nb] = table[:, :nb]
        j += nb
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
        j += len(_DERIVED)
        given = extras or {}
        times = (
            given.get("on_backend_s", getattr(batch, "on_backend_s", None)),
            given.get("head_age_s", table[:, nb]),
            given.get("last_first_token_s", table[:, nb + 1]),
            given.get("slo_ttft_s", getattr(batch, "slo_ttft_s", None)),
        )
        self._dispatch(out[:, j:], table, work, budget, analytical.ttft_s, times)
        out[:, -1] = out[:, j + 3] - batch.waited_s  # slack: NaN without the SLO
        return out

    @staticmethod
    def _dispatch(
        out: Matrix,
        table: npt.NDArray[np.float64],
        work: npt.NDArray[np.float64],
        budget: npt.NDArray[np.float64],
        an_ttft: npt.NDArray[np.float64],
        times: tuple[npt.NDArray[np.float64] | None, ...],
    ) -> None:
        """The ``_DISPATCH`` columns but the last (NaN where the inputs are unknown)."""
        for i, t in enumerate(times):
            out[:, i] = _NAN if t is None else t
        head, last = out[:, 1].astype(np.float64), out[:, 2].astype(np.float64)
        busy = np.where(np.isnan(last), head, np.minimum(head, last))
        cap = np.maximum(budget - table[:, 5], 1.0)  # prefill tokens per mixed step
        progress = busy * cap / np.maximum(table[:, 15], 1e-4)
        left = np.maximum(work - progress, 0.0)
        k = len(times)
        out[:, k] = busy
        out[:, k + 1] = progress
        out[:, k + 2] = left
        out[:, k + 3] = left / cap
        out[:, k + 4] = np.maximum(an_ttft - busy, 0.0)
