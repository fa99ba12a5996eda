"""Reading training rows back: join query and label lines into one labelled batch.

Theory of operation.  :func:`read_rows` reads the JSONL files a
:class:`~.dataset.TrainingRecorder` produced (a rotated file's siblings ``path.1``,
``path.2``... are read too, each file once), joins every query line to its label line by
row id, and drops rows that never got a label (censored, or cut off by rotation).  The
result is a :class:`LabelledRows`: one :class:`~ascendra_proxy.core.predict.QueryBatch`
whose backends are the distinct backend feature sets seen (rows from the same tick and
backend share one), the labels (``ttft_s``; ``next_token_s``, the next-``k`` time divided
by ``k``, NaN when the request ended first), the SLOs for reporting, the dispatch times the
batch types do not carry yet (see :mod:`.features`), and a group key per row (run and
request) so a held-out split never puts one request on both sides.
Malformed lines raise :class:`RowsError` naming the file and line.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
import orjson

from ascendra_proxy.core.predict import BackendFeatures, FloatArray, QueryBatch
from ascendra_proxy.predictor.dataset import QUERY_FIELDS
from ascendra_proxy.predictor.features import EXTRA_INPUTS

__all__ = ["LabelledRows", "RowsError", "expand_paths", "read_rows"]

_REQUIRED = tuple(f.name for f in fields(BackendFeatures) if f.default is MISSING)
_OPTIONAL = tuple(f.name for f in fields(BackendFeatures) if f.default is not MISSING)


def _backend(raw: object) -> BackendFeatures:
    """A recorded backend line; fields added later (those with defaults) may be absent;
    ``stream_remaining`` comes as a list."""
    if not isinstance(raw, dict):
        raise TypeError("backend features must be an object")
    values = {k: raw[k] for k in _REQUIRED}
    values.update({k: raw[k] for k in _OPTIONAL if k in raw})
    if "stream_remaining" in values:
        values["stream_remaining"] = tuple(int(x) for x in values["stream_remaining"])
    return BackendFeatures(**values)


class RowsError(ValueError):
    """A training data file is unreadable or malformed."""


@dataclass(frozen=True, slots=True)
class LabelledRows:
    batch: QueryBatch
    ttft_s: FloatArray
    next_token_s: FloatArray  # NaN where the request ended before k more tokens
    slo_ttft_s: FloatArray  # NaN when unknown
    slo_tbt_s: FloatArray
    groups: tuple[str, ...]  # "<run>|<request>" per row
    extras: dict[str, FloatArray]  # dispatch times (features.EXTRA_INPUTS), NaN if absent

    def __len__(self) -> int:
        return len(self.batch)

    def take(self, idx: np.ndarray) -> LabelledRows:
        b = self.batch
        batch = QueryBatch(
            backends=b.backends,
            backend_index=b.backend_index[idx],
            prompt_tokens=b.prompt_tokens[idx],
            generated_tokens=b.generated_tokens[idx],
            waited_s=b.waited_s[idx],
            queued_ahead_tokens=b.queued_ahead_tokens[idx],
            cached_tokens=b.cached_tokens[idx],
            resident=b.resident[idx],
            horizon_tokens=b.horizon_tokens,
        )
        return LabelledRows(
            batch,
            self.ttft_s[idx],
            self.next_token_s[idx],
            self.slo_ttft_s[idx],
            self.slo_tbt_s[idx],
            tuple(self.groups[i] for i in idx.tolist()),
            {k: v[idx] for k, v in self.extras.items()},
        )

    def split(self, holdout: float, seed: int) -> tuple[LabelledRows, LabelledRows]:
        """(train, held out): whole requests go to one side, chosen by a seeded hash."""
        cut = int(holdout * 1_000_000)
        salt = str(seed).encode()
        side = np.fromiter(
            (zlib.crc32(salt + g.encode()) % 1_000_000 < cut for g in self.groups),
            np.bool_,
            len(self.groups),
        )
        return self.take(np.flatnonzero(~side)), self.take(np.flatnonzero(side))


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Each path plus its rotated siblings (``path.1``, ``path.2``...), each file once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        group = [p]
        i = 1
        while (sib := p.with_name(f"{p.name}.{i}")).exists():
            group.append(sib)
            i += 1
        for q in group:
            key = q.resolve()
            if key not in seen and q.exists():
                seen.add(key)
                out.append(q)
        if not p.exists() and len(group) == 1:
            raise RowsError(f"{p}: no such file")
    return out


def _parse(
    paths: Sequence[Path],
) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
    queries: dict[str, dict[str, object]] = {}
    labels: dict[str, dict[str, object]] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise RowsError(f"{path}: {e.strerror or e}") from None
        for no, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                kind, rid = obj["k"], obj["id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                if no == len(data.splitlines()) and not data.endswith(b"\n"):
                    continue  # a line cut short by a crash while writing
                raise RowsError(f"{path}:{no}: not a training row") from None
            (queries if kind == "q" else labels)[rid] = obj
    return queries, labels


def read_rows(paths: Iterable[str | Path]) -> LabelledRows:
    """Labelled rows from the given files (see the module docstring)."""
    files = expand_paths(paths)
    queries, labels = _parse(files)
    backends: dict[BackendFeatures, int] = {}
    cols: dict[str, list[float]] = {k: [] for k in QUERY_FIELDS}
    index: list[int] = []
    ttft: list[float] = []
    nxt: list[float] = []
    slo_t: list[float] = []
    slo_b: list[float] = []
    groups: list[str] = []
    extras: dict[str, list[float]] = {k: [] for k in EXTRA_INPUTS}
    horizons: set[int] = set()
    for rid in sorted(queries, key=_row_order):
        lab = labels.get(rid)
        if lab is None or lab.get("ttft") is None:
            continue
        q = queries[rid]
        try:
            b = _backend(q["b"])
            values = q["q"]
            h = int(q["h"])  # type: ignore[call-overload]
            for k, v in zip(QUERY_FIELDS, values, strict=True):  # type: ignore[call-overload]
                cols[k].append(float(v))
        except (KeyError, TypeError, ValueError) as e:
            raise RowsError(f"row {rid}: malformed query line ({e})") from None
        index.append(backends.setdefault(b, len(backends)))
        horizons.add(h)
        ttft.append(float(lab["ttft"]))  # type: ignore[arg-type]
        nk = lab.get("next_k")
        nxt.append(float("nan") if nk is None else float(nk) / h)  # type: ignore[arg-type]
        slo = q.get("slo")
        slo_t.append(float(slo[0]) if slo else float("nan"))  # type: ignore[index]
        slo_b.append(float(slo[1]) if slo else float("nan"))  # type: ignore[index]
        groups.append(f"{rid.rsplit(':', 1)[0]}|{q.get('rid')}")
        x = dict(q.get("x") or {})  # type: ignore[call-overload]
        if slo:
            x.setdefault("slo_ttft_s", slo[0])  # type: ignore[index]
        for k, vals in extras.items():
            v = x.get(k)
            vals.append(float("nan") if v is None else float(v))
    if not index:
        raise RowsError(f"no labelled rows in {', '.join(str(p) for p in files)}")
    labels_ = (ttft, nxt, slo_t, slo_b)
    return _assemble(backends, index, cols, labels_, groups, extras, horizons)


def _row_order(row_id: str) -> tuple[str, int]:
    run, _, n = row_id.rpartition(":")
    return (run, int(n)) if n.isdigit() else (row_id, 0)


def _assemble(
    backends: dict[BackendFeatures, int],
    index: list[int],
    cols: dict[str, list[float]],
    labels: tuple[list[float], list[float], list[float], list[float]],
    groups: list[str],
    extras: dict[str, list[float]],
    horizons: set[int],
) -> LabelledRows:
    def arr(v: list[float]) -> FloatArray:
        return np.asarray(v, dtype=np.float64)

    horizon = max(horizons)  # next_token_s is per token, so the batch horizon only scales
    batch = QueryBatch(
        backends=tuple(backends),
        backend_index=np.asarray(index, dtype=np.int64),
        prompt_tokens=arr(cols["prompt_tokens"]),
        generated_tokens=arr(cols["generated_tokens"]),
        waited_s=arr(cols["waited_s"]),
        queued_ahead_tokens=arr(cols["queued_ahead_tokens"]),
        cached_tokens=arr(cols["cached_tokens"]),
        resident=np.asarray(cols["resident"], dtype=np.float64).astype(np.bool_),
        horizon_tokens=horizon,
    )
    ttft, nxt, slo_t, slo_b = labels
    return LabelledRows(
        batch,
        arr(ttft),
        arr(nxt),
        arr(slo_t),
        arr(slo_b),
        tuple(groups),
        {k: arr(v) for k, v in extras.items()},
    )
