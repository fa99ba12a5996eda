"""Trace parsing and the rejection of malformed traces (messages name file, line, column)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.traces import TraceError, TraceRow, read_trace

SHARED_TRACES = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "traces"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parses_rows_and_ignores_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "arrived_at,num_prefill_tokens,num_decode_tokens,extra\n0.0,374,44,x\n\n4.5,396.0,109,y\n",
    )
    assert read_trace(p) == [TraceRow(0.0, 374, 44), TraceRow(4.5, 396, 109)]


def test_lengths_only_trace_has_no_arrivals(tmp_path: Path) -> None:
    p = write(tmp_path, "num_prefill_tokens,num_decode_tokens\n10,2\n")
    assert read_trace(p) == [TraceRow(None, 10, 2)]
    with pytest.raises(TraceError, match=r"t\.csv:1: missing column\(s\) 'arrived_at'"):
        read_trace(p, require_arrivals=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("arrived_at,num_decode_tokens\n0,1\n", r":1: missing column\(s\) 'num_prefill_tokens'"),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,1\n1,abc,2\n",
            r":3: column 'num_prefill_tokens': expected a number, got 'abc'",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,1\n1,10,-2\n",
            r":3: column 'num_decode_tokens': negative value -2",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n-1,10,1\n",
            r":2: column 'arrived_at': negative value -1",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,1\n5,10,1\n4.9,10,1\n",
            r":4: column 'arrived_at': arrivals must not go backwards \(4\.9 after 5\.0\)",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10.5,1\n",
            r":2: column 'num_prefill_tokens': expected a whole number of tokens, got '10.5'",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,0\n",
            r":2: column 'num_decode_tokens': must be at least 1, got 0",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10\n",
            r":2: expected 3 fields, got 2",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\nnan,10,1\n",
            r":2: column 'arrived_at': not a finite number: 'nan'",
        ),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n", r": no data rows after the header"),
        ("", r":1: empty file"),
    ],
)
def test_malformed_traces_are_rejected_with_file_line_and_column(
    tmp_path: Path, body: str, message: str
) -> None:
    p = write(tmp_path, body, "bad.csv")
    with pytest.raises(TraceError, match=r"bad\.csv" + message):
        read_trace(p, require_arrivals="arrived_at" in body)


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nope\.csv: cannot read trace"):
        read_trace(tmp_path / "nope.csv")


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason="shared Azure traces not present")
def test_azure_conversation_trace_parses() -> None:
    rows = read_trace(SHARED_TRACES / "splitwise_conv.csv", require_arrivals=True)
    assert len(rows) == 19366
    assert rows[0] == TraceRow(0.0, 374, 44)
    times = [r.arrived_at or 0.0 for r in rows]
    assert times == sorted(times)
