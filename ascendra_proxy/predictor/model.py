"""The learned slack predictor: LightGBM quantile models behind the ``SlackPredictor`` seam.

Theory of operation.  A model file (JSON, written by :mod:`.train`) holds two LightGBM
boosters trained with the quantile objective (default quantile 0.9: a conservative upper
estimate), one per target:

* ``ttft``: seconds from now to the request's first token on that backend (for a request
  already streaming there, the next token comes within one step, and the ``next_token``
  prediction answers);
* ``next_token``: seconds per token of the following ``k`` tokens (so any horizon works:
  ``next_k_s = prediction * horizon_tokens``);

each on a ``log`` scale (the booster predicts ``log(seconds + 1 ms)``: quantiles survive a
monotone transform, and the loss weighs a 50 ms error on a 100 ms wait like a 5 s error
on a 10 s one) or in seconds (``identity``), plus the metadata that makes a mismatch fail
loudly: the file format and version, the feature schema version and names, the profile
vocabulary, the quantile, and training statistics.  :func:`read_model` validates all of
it and raises :class:`ModelFileError` with a message that says what is wrong and what to
do.

:class:`LearnedPredictor` answers a :class:`~ascendra_proxy.core.predict.QueryBatch` with
one feature build and one ``predict`` per booster (single-threaded: at 1,000 rows thread
start-up costs more than it saves).  It watches its file: :meth:`~LearnedPredictor.
maybe_reload` (a ``stat``, plus a read and parse of a small file when the size or mtime
changed) swaps in a new model, and a bad new file is logged and ignored until the file
changes again (the old model keeps answering).  The parse takes tens of milliseconds (the
LightGBM boosters), so the live proxy splits it: :meth:`~LearnedPredictor.read_changed` in a
worker thread, :meth:`~LearnedPredictor.install` on the event loop.  Without a model it answers
with the analytical fallback and says so in :attr:`~LearnedPredictor.source`.
:func:`load_predictor` is the factory drivers use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from ascendra_proxy.core.predict import (
    AnalyticalPredictor,
    FloatArray,
    Prediction,
    PredictorSource,
    QueryBatch,
)
from ascendra_proxy.predictor.features import (
    FEATURE_NAMES,
    SCHEMA_VERSION,
    Extras,
    FeatureBuilder,
)

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "LOG_OFFSET_S",
    "TARGETS",
    "LearnedPredictor",
    "ModelFileError",
    "PredictorModel",
    "TargetModel",
    "load_predictor",
    "read_model",
]

log = logging.getLogger(__name__)

FILE_FORMAT = "ascendra-slack-predictor"
FILE_VERSION = 1
TARGETS = ("ttft", "next_token")
TRANSFORMS = ("identity", "log")
LOG_OFFSET_S = 1e-3  # log(seconds + offset): finite at 0


class ModelFileError(ValueError):
    """A predictor model file is missing, corrupt, or does not match this build."""


@dataclass(frozen=True, slots=True)
class TargetModel:
    booster: lgb.Booster
    transform: str  # "identity" | "log"


@dataclass(frozen=True, slots=True)
class PredictorModel:
    """A validated model file."""

    targets: dict[str, TargetModel]
    quantile: float
    profiles: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


def _fail(path: object, msg: str) -> ModelFileError:
    return ModelFileError(f"{path}: {msg}")


def parse_model(data: bytes, where: object = "<model>") -> PredictorModel:
    """Validate and load a model file's bytes (see :func:`read_model`)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _fail(where, f"not a {FILE_FORMAT} model file (not valid JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise _fail(where, f"not a {FILE_FORMAT} model file (no 'format: {FILE_FORMAT}')")
    if doc.get("format_version") != FILE_VERSION:
        raise _fail(
            where,
            f"file format version {doc.get('format_version')!r}, this build reads {FILE_VERSION}",
        )
    _check_schema(doc, where)
    q = doc.get("quantile")
    if not isinstance(q, int | float) or not 0.0 < q < 1.0:
        raise _fail(where, f"quantile {q!r} is not in (0, 1)")
    targets = doc.get("targets")
    if not isinstance(targets, dict) or sorted(targets) != sorted(TARGETS):
        raise _fail(where, f"expected targets {list(TARGETS)}, found {targets and list(targets)}")
    loaded = {name: _target(where, name, targets[name]) for name in TARGETS}
    profiles = doc.get("profiles", [])
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise _fail(where, "'profiles' must be a list of names")
    meta = doc.get("training", {})
    return PredictorModel(loaded, float(q), tuple(profiles), meta if isinstance(meta, dict) else {})


def _check_schema(doc: dict[str, Any], where: object) -> None:
    version = doc.get("schema_version")
    retrain = "retrain it with `ascendra-proxy train`"
    if version != SCHEMA_VERSION:
        raise _fail(
            where,
            f"feature schema version {version!r}, this build uses {SCHEMA_VERSION}; {retrain}",
        )
    names = doc.get("feature_names")
    if names != list(FEATURE_NAMES):
        if not isinstance(names, list):
            raise _fail(where, f"no feature names; {retrain}")
        i = next(
            (i for i, (a, b) in enumerate(zip(names, FEATURE_NAMES, strict=False)) if a != b),
            min(len(names), len(FEATURE_NAMES)),
        )
        theirs = names[i] if i < len(names) else "<end>"
        ours = FEATURE_NAMES[i] if i < len(FEATURE_NAMES) else "<end>"
        raise _fail(
            where,
            f"feature names differ from this build's schema v{SCHEMA_VERSION} at column {i} "
            f"({theirs!r} in the file, {ours!r} expected); {retrain}",
        )


def _target(where: object, name: str, spec: object) -> TargetModel:
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        raise _fail(where, f"target {name!r}: no LightGBM model text")
    transform = spec.get("transform", "identity")
    if transform not in TRANSFORMS:
        known = list(TRANSFORMS)
        raise _fail(where, f"target {name!r}: unknown transform {transform!r} (known: {known})")
    try:
        booster = lgb.Booster(model_str=spec["model"])
    except lgb.basic.LightGBMError as e:
        raise _fail(where, f"target {name!r}: corrupt LightGBM model ({e})") from None
    if booster.num_feature() != len(FEATURE_NAMES):
        raise _fail(
            where,
            f"target {name!r}: model has {booster.num_feature()} features, "
            f"schema v{SCHEMA_VERSION} has {len(FEATURE_NAMES)}",
        )
    return TargetModel(booster, str(transform))


def read_model(path: str | os.PathLike[str]) -> PredictorModel:
    """Read and validate a model file; raises :class:`ModelFileError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise _fail(path, f"cannot read the model file ({e.strerror or e})") from None
    return parse_model(data, path)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class LearnedPredictor:
    """See the module docstring.  ``model=None``: answer analytically until a valid file
    appears at ``path`` (what :func:`load_predictor` returns when the first load fails)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fallback: AnalyticalPredictor,
        model: PredictorModel | None = None,
    ) -> None:
        self.path = Path(path)
        self.fallback = fallback
        self._model = model
        self._builder = FeatureBuilder(fallback, model.profiles if model else ())
        self._seen = _signature(self.path)
        self.reloads = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], fallback: AnalyticalPredictor) -> LearnedPredictor:
        """Load ``path`` now; raises :class:`ModelFileError` when it is unusable."""
        p = Path(path)
        seen = _signature(p)
        out = cls(p, fallback, read_model(p))
        out._seen = seen
        return out

    @property
    def source(self) -> PredictorSource:
        return "learned" if self._model is not None else "analytical"

    @property
    def model(self) -> PredictorModel | None:
        return self._model

    # -- reload -------------------------------------------------------------------------

    def needs_reload(self) -> bool:
        """The file's size or mtime changed since the last (attempted) load (one stat)."""
        return _signature(self.path) != self._seen

    def reload(self) -> bool:
        """Read the file now and install it if valid (safe to run in a worker thread).
        Returns True when a new model was installed."""
        seen = _signature(self.path)
        self._seen = seen
        if seen is None:
            return False
        try:
            model = read_model(self.path)
        except ModelFileError as e:
            log.warning("predictor model not reloaded, keeping the current one: %s", e)
            return False
        self.install(model)
        return True

    def maybe_reload(self) -> bool:
        """Reload if the file changed (see :meth:`needs_reload`); True when reloaded."""
        return self.needs_reload() and self.reload()

    def read_changed(self) -> PredictorModel | None:
        """The file's model if its size or mtime changed since the last attempt, else None
        (also None when it is gone or invalid: logged, the current model stays).  Installs
        nothing: a driver runs this in a worker thread and passes the result to
        :meth:`install` on its own thread, so neither the read nor the parse blocks it."""
        seen = _signature(self.path)
        if seen == self._seen:
            return None
        self._seen = seen
        if seen is None:
            return None
        try:
            return read_model(self.path)
        except ModelFileError as e:
            log.warning("predictor model not reloaded, keeping the current one: %s", e)
            return None

    def install(self, model: PredictorModel) -> None:
        self._builder = FeatureBuilder(self.fallback, model.profiles)
        self._model = model
        self.reloads += 1
        log.info("predictor model loaded from %s (quantile %.2f)", self.path, model.quantile)

    # -- answering ----------------------------------------------------------------------

    def predict(self, batch: QueryBatch) -> Prediction:
        return self.predict_with(batch)

    def predict_with(self, batch: QueryBatch, extras: Extras | None = None) -> Prediction:
        """``predict`` with the dispatch times given per row (training rows carry them;
        see :mod:`.features`)."""
        model, builder = self._model, self._builder
        an = self.fallback.predict(batch)
        if model is None or len(batch) == 0:
            return an
        x = builder.build(batch, an, extras)
        horizon = max(batch.horizon_tokens, 1)
        per_token = _apply(model.targets["next_token"], x)
        ttft = per_token.copy()  # a stream's next token: within one step
        first = np.flatnonzero(~batch.resident)
        if len(first):
            xf = x if len(first) == len(batch) else x[first]
            ttft[first] = _apply(model.targets["ttft"], xf)
        return Prediction(ttft, per_token * horizon, "learned")


def _apply(t: TargetModel, x: np.ndarray) -> FloatArray:
    y: FloatArray = np.asarray(t.booster.predict(x, num_threads=1), dtype=np.float64)
    if t.transform == "log":
        y = np.exp(y) - LOG_OFFSET_S
    return np.maximum(y, 0.0)


def load_predictor(
    path: str | os.PathLike[str] | None, fallback: AnalyticalPredictor, watch: bool = True
) -> AnalyticalPredictor | LearnedPredictor:
    """The predictor a driver should use: ``fallback`` without a path; the learned model
    from ``path`` when it loads; otherwise ``fallback`` with a logged warning (with
    ``watch``, wrapped so that a valid file appearing later is picked up by
    ``maybe_reload``; its ``source`` stays "analytical" until then)."""
    if path is None:
        return fallback
    try:
        return LearnedPredictor.open(path, fallback)
    except ModelFileError as e:
        log.warning("learned predictor unavailable, using the analytical model: %s", e)
        return LearnedPredictor(path, fallback, None) if watch else fallback
