"""Request traces: CSV files of arrival times and token counts.

Theory of operation: a trace is a CSV with a header naming at least the columns
``num_prefill_tokens`` and ``num_decode_tokens`` and, for traces that carry timing,
``arrived_at`` (seconds from the trace start; the Azure LLM inference trace 2023 files as
processed by Microsoft's vidur project have exactly this shape).  :func:`read_trace` parses
the whole file eagerly and validates every cell, so a malformed trace is rejected before a
run starts, with a :class:`TraceError` whose message names the file, the 1-based line and
the column (``conv.csv:17: column 'arrived_at': ...``).  Extra columns are ignored.

Rules: token counts are positive integers written as integers or as floats with no
fractional part (``512`` or ``512.0``); arrivals
are finite, non-negative and non-decreasing.  Nothing here reads a clock or a random source.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ARRIVAL_COLUMN", "TraceError", "TraceRow", "parse_trace_rows", "read_trace"]

ARRIVAL_COLUMN = "arrived_at"
PROMPT_COLUMN = "num_prefill_tokens"
OUTPUT_COLUMN = "num_decode_tokens"


class TraceError(ValueError):
    """A trace file that cannot be used as written; the message names file, line and column."""


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrived_at: float | None  # seconds from trace start; None when the trace has no arrivals
    prompt_tokens: int
    output_tokens: int


def read_trace(path: str | Path, *, require_arrivals: bool = False) -> list[TraceRow]:
    """Parse and validate a whole trace file."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            return parse_trace_rows(csv.reader(fh), str(p), require_arrivals=require_arrivals)
    except OSError as exc:
        raise TraceError(f"{p}: cannot read trace: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{p}: not a UTF-8 text file") from None


def parse_trace_rows(
    rows: Iterable[Sequence[str]], source: str, *, require_arrivals: bool = False
) -> list[TraceRow]:
    """Validate CSV rows (header first); ``source`` names the file in error messages."""
    it = iter(rows)
    header = next(it, None)
    if header is None:
        raise TraceError(f"{source}:1: empty file, expected a header line")
    columns = [name.strip() for name in header]
    wanted = [PROMPT_COLUMN, OUTPUT_COLUMN] + ([ARRIVAL_COLUMN] if require_arrivals else [])
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise TraceError(
            f"{source}:1: missing column(s) {', '.join(repr(m) for m in missing)}; "
            f"header has {', '.join(repr(c) for c in columns)}"
        )
    i_prompt, i_output = columns.index(PROMPT_COLUMN), columns.index(OUTPUT_COLUMN)
    i_arrival = columns.index(ARRIVAL_COLUMN) if ARRIVAL_COLUMN in columns else None
    out: list[TraceRow] = []
    previous = 0.0
    for line_no, row in enumerate(it, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(columns):
            raise TraceError(f"{source}:{line_no}: expected {len(columns)} fields, got {len(row)}")
        arrived = None
        if i_arrival is not None:
            arrived = _seconds(row[i_arrival], source, line_no)
            if arrived < previous:
                raise TraceError(
                    f"{source}:{line_no}: column {ARRIVAL_COLUMN!r}: arrivals must not go "
                    f"backwards ({arrived} after {previous})"
                )
            previous = arrived
        prompt = _count(row[i_prompt], source, line_no, PROMPT_COLUMN, minimum=1)
        output = _count(row[i_output], source, line_no, OUTPUT_COLUMN, minimum=1)
        out.append(TraceRow(arrived, prompt, output))
    if not out:
        raise TraceError(f"{source}: no data rows after the header")
    return out


def _number(cell: str, source: str, line_no: int, column: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        raise TraceError(
            f"{source}:{line_no}: column {column!r}: expected a number, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise TraceError(f"{source}:{line_no}: column {column!r}: not a finite number: {text!r}")
    if value < 0:
        raise TraceError(f"{source}:{line_no}: column {column!r}: negative value {text}")
    return value


def _seconds(cell: str, source: str, line_no: int) -> float:
    return _number(cell, source, line_no, ARRIVAL_COLUMN)


def _count(cell: str, source: str, line_no: int, column: str, *, minimum: int) -> int:
    value = _number(cell, source, line_no, column)
    if value != int(value):
        raise TraceError(
            f"{source}:{line_no}: column {column!r}: expected a whole number of tokens, "
            f"got {cell.strip()!r}"
        )
    if value < minimum:
        raise TraceError(
            f"{source}:{line_no}: column {column!r}: must be at least {minimum}, got {int(value)}"
        )
    return int(value)
