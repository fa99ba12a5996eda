"""Training rows: what the predictor was (or would have been) asked, and what then happened.

Theory of operation.  At a decision point (a monitor tick) the driver hands
:meth:`TrainingRecorder.observe` one question per request: the request's row
(:class:`~ascendra_proxy.core.predict.PredictionQuery`) and the backend's features
(:class:`~ascendra_proxy.core.predict.BackendFeatures`).  The recorder emits a *query line*
at once and keeps a small open record; as the request's tokens arrive
(:meth:`label_tokens`) it measures the labels:

* ``ttft``: seconds from the observation to the request's next token (its first token for
  a request that has not started, the next one for a resident stream);
* ``next_k``: seconds from that token until ``horizon_tokens`` more have arrived.

When both are known, or the request finishes, it emits a *label line* joined to the query
line by the row id (``"<run_id>:<n>"``).  A row whose request moved elsewhere before its
token came (offload, migration, retry) is *censored*: its label would describe another
backend, so it is dropped (:meth:`discard`, or tokens from a backend the row did not
accept).  A request finishing before ``horizon_tokens`` more tokens leaves ``next_k`` null.
When the observation carried the predictor's answer, ``on_label`` receives it with the
actual values (a live error measurement, see :mod:`.metrics`).

Rows per request are rate limited (``min_interval_s`` before the first token,
``resident_interval_s`` after), open rows are bounded, and lines are buffered: the recorder
never touches a file.  ``take_lines()`` hands the buffer to the caller (the live proxy
writes it off the event loop), or a ``sink`` set at construction is called synchronously
every ``flush_lines`` lines and on :meth:`flush` (the simulator).  :class:`RollingJsonl` is
the sink that appends to a size-capped file and rotates it (``path`` -> ``path.1`` ...),
keeping the newest ``keep`` rotated files.  Nothing here reads a clock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ascendra_proxy.core.predict import BackendFeatures, PredictionQuery

__all__ = ["QUERY_FIELDS", "Outcome", "RollingJsonl", "TrainingRecorder"]

# Order of the per-row values in a query line's "q" list.
QUERY_FIELDS = (
    "prompt_tokens",
    "generated_tokens",
    "waited_s",
    "queued_ahead_tokens",
    "cached_tokens",
    "resident",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A labelled row, for a live check of the predictor (see ``on_label``)."""

    resident: bool
    slo: tuple[float, float] | None
    predicted: tuple[float, float]  # (ttft, next_k) the predictor gave at observation
    ttft: float
    next_k: float | None
    horizon: int


@dataclass(slots=True)
class _Row:
    row_id: str
    t_obs: float
    accept: frozenset[str]
    resident: bool = False
    slo: tuple[float, float] | None = None
    predicted: tuple[float, float] | None = None
    ttft: float | None = None
    t_token: float | None = None
    after: int = 0  # tokens seen after the row's next token


@dataclass(slots=True)
class _Open:
    rows: list[_Row] = field(default_factory=list)
    last_obs: float = float("-inf")
    last_resident: bool = False


class TrainingRecorder:
    """Buffers query and label lines (JSONL); see the module docstring."""

    def __init__(
        self,
        run_id: str,
        horizon_tokens: int = 32,
        *,
        min_interval_s: float = 0.1,
        resident_interval_s: float = 0.5,
        max_rows_per_request: int = 64,
        sink: Callable[[list[bytes]], None] | None = None,
        flush_lines: int = 4096,
        on_label: Callable[[Outcome], None] | None = None,
    ) -> None:
        if horizon_tokens < 1:
            raise ValueError("horizon_tokens must be >= 1")
        self.run_id = run_id
        self.horizon = horizon_tokens
        self._min = min_interval_s
        self._min_resident = resident_interval_s
        self._max_rows = max_rows_per_request
        self._sink = sink
        self._flush_lines = flush_lines
        self._on_label = on_label
        self._open: dict[str, _Open] = {}
        self._lines: list[bytes] = []
        self._seq = 0
        self.rows_observed = 0
        self.rows_labelled = 0
        self.rows_censored = 0

    # -- observations -------------------------------------------------------------------

    def due(self, request_id: str, now: float, resident: bool) -> bool:
        """Whether :meth:`observe` would record a row for this request now."""
        o = self._open.get(request_id)
        if o is None:
            return True
        gap = self._min_resident if resident else self._min
        if resident != o.last_resident:
            return len(o.rows) < self._max_rows
        return now - o.last_obs >= gap and len(o.rows) < self._max_rows

    def observe(
        self,
        request_id: str,
        now: float,
        query: PredictionQuery,
        backend: BackendFeatures,
        slo: tuple[float, float] | None = None,
        accept: Iterable[str] | None = None,
        extra: Mapping[str, float] | None = None,
        predicted: tuple[float, float] | None = None,
    ) -> str | None:
        """Record one question; returns its row id, or None when rate limited.

        ``accept`` names the backends whose tokens may label the row (default: the
        backend asked about); ``slo`` is (TTFT SLO, TBT SLO) in seconds, kept for reports;
        ``extra`` holds inputs the batch types do not carry yet (``on_backend_s``,
        ``head_age_s``: see :mod:`.features`); ``predicted`` (the predictor's ``(ttft,
        next_k)`` for this question) is handed to ``on_label`` with the actual values."""
        if not self.due(request_id, now, query.resident):
            return None
        o = self._open.get(request_id)
        if o is None:
            o = self._open[request_id] = _Open()
        self._seq += 1
        row_id = f"{self.run_id}:{self._seq}"
        names = frozenset(accept) if accept is not None else frozenset((backend.name,))
        o.rows.append(_Row(row_id, now, names, query.resident, slo, predicted))
        o.last_obs = now
        o.last_resident = query.resident
        q = [getattr(query, k) for k in QUERY_FIELDS]
        line = {
            "k": "q",
            "id": row_id,
            "t": now,
            "rid": request_id,
            "h": self.horizon,
            "slo": list(slo) if slo is not None else None,
            "q": q,
            "b": backend,  # orjson writes the dataclass (50x faster than asdict: hot in a tick)
            "x": dict(extra) if extra else None,
        }
        self._emit(orjson.dumps(line))
        self.rows_observed += 1
        return row_id

    # -- labels -------------------------------------------------------------------------

    def label_tokens(self, request_id: str, now: float, n: int, backend: str | None = None) -> None:
        """``n`` tokens of the request arrived at ``now`` (from ``backend`` when known)."""
        o = self._open.get(request_id)
        if o is None or n <= 0:
            return
        keep: list[_Row] = []
        for r in o.rows:
            if backend is not None and backend not in r.accept:
                self.rows_censored += 1
                continue
            if r.t_token is None:
                r.t_token, r.ttft, r.after = now, now - r.t_obs, n - 1
            else:
                r.after += n
            if r.after >= self.horizon:
                self._label(r, now - r.t_token)
            else:
                keep.append(r)
        o.rows = keep

    def label_first_token(self, request_id: str, now: float, backend: str | None = None) -> None:
        """The request's first token arrived (same as ``label_tokens(..., n=1)``)."""
        self.label_tokens(request_id, now, 1, backend)

    def discard(self, request_id: str) -> None:
        """The request left its backend (offload, migration, retry): its open rows are
        censored.  Later observations start afresh."""
        o = self._open.pop(request_id, None)
        if o is not None:
            self.rows_censored += len(o.rows)

    def finish(self, request_id: str) -> None:
        """The request ended: rows with a next token get a label (``next_k`` null)."""
        o = self._open.pop(request_id, None)
        if o is None:
            return
        for r in o.rows:
            if r.ttft is None:
                self.rows_censored += 1
            else:
                self._label(r, None)

    def _label(self, r: _Row, next_k: float | None) -> None:
        self._emit(orjson.dumps({"k": "l", "id": r.row_id, "ttft": r.ttft, "next_k": next_k}))
        self.rows_labelled += 1
        if self._on_label is not None and r.predicted is not None and r.ttft is not None:
            self._on_label(Outcome(r.resident, r.slo, r.predicted, r.ttft, next_k, self.horizon))

    def set_on_label(self, callback: Callable[[Outcome], None] | None) -> None:
        self._on_label = callback

    # -- output -------------------------------------------------------------------------

    @property
    def open_requests(self) -> int:
        return len(self._open)

    def _emit(self, line: bytes) -> None:
        self._lines.append(line)
        if self._sink is not None and len(self._lines) >= self._flush_lines:
            self.flush()

    def take_lines(self) -> list[bytes]:
        """The buffered lines (without newlines), clearing the buffer."""
        out, self._lines = self._lines, []
        return out

    def flush(self) -> None:
        """Hand the buffer to the sink (no-op without a sink)."""
        if self._sink is not None and self._lines:
            self._sink(self.take_lines())


class RollingJsonl:
    """Appends lines to ``path``; past ``max_bytes`` the file rotates (``path.1`` is the
    previous file, ``path.2`` the one before...) and only the newest ``keep`` rotated files
    stay beside the current one (at most about ``(keep + 1) * max_bytes`` on disk).
    Safe to call from one worker thread at a time (a lock serialises writers)."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 64 << 20, keep: int = 4):
        if max_bytes < 1 or keep < 1:
            raise ValueError("max_bytes and keep must be >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    def __call__(self, lines: list[bytes]) -> None:
        self.write_lines(lines)

    def write_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as fh:
                fh.write(data)
                size = fh.tell()
            if size >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        name = self.path.name
        for i in range(self.keep - 1, 0, -1):  # path.keep (the oldest) is overwritten
            src = self.path.with_name(f"{name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{name}.1"))

    def files(self) -> list[Path]:
        """Existing files, newest first."""
        names = [self.path] + [
            self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)
        ]
        return [p for p in names if p.exists()]
