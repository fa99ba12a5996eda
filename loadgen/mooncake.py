"""Mooncake traces: arrivals, lengths and the prefix-sharing structure of real traffic.

Theory of operation: a Mooncake trace (Moonshot AI's serving traces released with the
Mooncake paper, FAST'25, Apache-2.0) is JSON lines with ``timestamp`` (ms from the trace
start), ``input_length``, ``output_length`` and ``hash_ids``: one id per 512-token block of
the prompt, the last block partial (``input_length - 512 * (len(hash_ids) - 1)`` tokens).
Equal ids mean equal blocks *and* equal prefixes up to them (the ids are chained), so a
block repeats only behind repeated blocks.  :func:`read_mooncake` parses and validates the
whole file (errors name file, line and field, like :mod:`loadgen.traces`).

A replay maps every hash id to a fixed, seeded block of token ids (see
:mod:`loadgen.blocks`); two requests then share exactly the prefix blocks the trace says.
``block_tokens`` scales the mapping (512 by default; a small-context engine in a test can use
fewer tokens per block and stay block-exact): a request of ``k`` blocks gets
``(k - 1) * block_tokens + ceil(last * block_tokens / 512)`` tokens.

:func:`prefix_reuse` says, from the trace alone, how many prompt tokens an engine with an
unbounded prefix cache can reuse when requests run one after another: a request reuses its
leading blocks whose ids appeared in earlier requests (a repeated partial block only up to
the length it had before).  Given an engine block size it applies vLLM's rules too: only
whole engine blocks hit, and never the prompt's last token (it must be computed to sample).
:func:`repeated_block_share` is the plain share of blocks whose id appeared before.
:func:`lru_prefix_reuse` bounds the cache: the same sequential replay with a cache of
``cache_tokens`` that evicts the least recently used trace block, i.e. what perfect affinity
can reuse when all traffic shares that much KV cache.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from loadgen.traces import TraceError

__all__ = [
    "TRACE_BLOCK_TOKENS",
    "MooncakeRow",
    "PrefixReuse",
    "is_mooncake_path",
    "lru_prefix_reuse",
    "parse_mooncake_lines",
    "prefix_reuse",
    "read_mooncake",
    "repeated_block_share",
    "scaled_prompt_tokens",
]

TRACE_BLOCK_TOKENS = 512  # tokens per hash id in the published traces


@dataclass(frozen=True, slots=True)
class MooncakeRow:
    arrived_at: float  # seconds from the trace start
    prompt_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]

    @property
    def last_block_tokens(self) -> int:
        return self.prompt_tokens - TRACE_BLOCK_TOKENS * (len(self.hash_ids) - 1)


def is_mooncake_path(path: str | Path) -> bool:
    """Mooncake traces are JSON lines; the CSV traces are not."""
    return Path(path).suffix in (".jsonl", ".json")


def read_mooncake(path: str | Path) -> list[MooncakeRow]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return parse_mooncake_lines(fh, str(p))
    except OSError as exc:
        raise TraceError(f"{p}: cannot read trace: {exc.strerror or exc}") from None


def parse_mooncake_lines(lines: Iterable[bytes | str], source: str) -> list[MooncakeRow]:
    out: list[MooncakeRow] = []
    previous = 0.0
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TraceError(f"{source}:{line_no}: not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise TraceError(f"{source}:{line_no}: expected a JSON object")
        row = _row(doc, source, line_no)
        if row.arrived_at < previous:
            raise TraceError(
                f"{source}:{line_no}: field 'timestamp': arrivals must not go backwards"
            )
        previous = row.arrived_at
        out.append(row)
    if not out:
        raise TraceError(f"{source}: no requests")
    return out


def _int_field(doc: dict[str, object], key: str, source: str, line_no: int, minimum: int) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{source}:{line_no}: field {key!r}: expected an integer, got {value!r}")
    if value < minimum:
        raise TraceError(f"{source}:{line_no}: field {key!r}: must be at least {minimum}")
    return value


def _row(doc: dict[str, object], source: str, line_no: int) -> MooncakeRow:
    stamp = doc.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise TraceError(f"{source}:{line_no}: field 'timestamp': expected milliseconds")
    if stamp < 0:
        raise TraceError(f"{source}:{line_no}: field 'timestamp': negative")
    prompt = _int_field(doc, "input_length", source, line_no, 1)
    output = _int_field(doc, "output_length", source, line_no, 1)
    ids = doc.get("hash_ids")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
    ):
        raise TraceError(f"{source}:{line_no}: field 'hash_ids': expected non-negative integers")
    if len(ids) != -(-prompt // TRACE_BLOCK_TOKENS):
        raise TraceError(
            f"{source}:{line_no}: field 'hash_ids': {len(ids)} blocks for {prompt} tokens "
            f"(expected one per {TRACE_BLOCK_TOKENS})"
        )
    return MooncakeRow(float(stamp) / 1000.0, prompt, output, tuple(ids))


def scaled_prompt_tokens(row: MooncakeRow, block_tokens: int) -> int:
    """The prompt length when every trace block maps to ``block_tokens`` tokens."""
    if block_tokens == TRACE_BLOCK_TOKENS:
        return row.prompt_tokens
    last = -(-row.last_block_tokens * block_tokens // TRACE_BLOCK_TOKENS)
    return (len(row.hash_ids) - 1) * block_tokens + last


def repeated_block_share(rows: Sequence[MooncakeRow]) -> float:
    """Share of all prompt blocks whose hash id appeared in an earlier request."""
    seen: set[int] = set()
    total = repeated = 0
    for r in rows:
        total += len(r.hash_ids)
        repeated += sum(1 for h in r.hash_ids if h in seen)
        seen.update(r.hash_ids)
    return repeated / total if total else 0.0


@dataclass(frozen=True, slots=True)
class PrefixReuse:
    reusable_tokens: int
    prompt_tokens: int

    @property
    def share(self) -> float:
        return self.reusable_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def prefix_reuse(
    rows: Sequence[MooncakeRow],
    block_tokens: int = TRACE_BLOCK_TOKENS,
    engine_block: int | None = None,
    prompt_caps: Sequence[int] | None = None,
) -> PrefixReuse:
    """Reusable prefix tokens of a sequential replay (see the module docstring).

    ``prompt_caps`` gives each request's prompt length when it was clipped (to a context).
    """
    longest: dict[int, int] = {}  # hash id -> most tokens of that block any request had
    reusable = total = 0
    for k, r in enumerate(rows):
        n = scaled_prompt_tokens(r, block_tokens)
        if prompt_caps is not None:
            n = min(n, prompt_caps[k])
        total += n
        reused = 0
        for i, h in enumerate(r.hash_ids):
            mine = min(block_tokens, n - i * block_tokens)
            if mine <= 0:
                break
            before = longest.get(h, 0)
            reused += min(mine, before)
            if before < mine:
                break
        if engine_block is not None:
            reused = min(reused, n - 1) // engine_block * engine_block
        reusable += reused
        for i, h in enumerate(r.hash_ids):
            mine = min(block_tokens, n - i * block_tokens)
            if mine <= 0:
                break
            longest[h] = max(longest.get(h, 0), mine)
    return PrefixReuse(reusable, total)


def lru_prefix_reuse(
    rows: Sequence[MooncakeRow], cache_tokens: int, block_tokens: int = TRACE_BLOCK_TOKENS
) -> PrefixReuse:
    """Reusable prefix tokens of a sequential replay through an LRU cache of trace blocks.

    A request reuses its leading blocks still cached (a partial block only up to the length
    cached); then all its blocks become the most recently used.  Whole trace blocks, no
    engine-block rounding: an estimate of what any placement can reuse with that much cache.
    """
    capacity = max(1, cache_tokens // block_tokens)
    cached: OrderedDict[int, int] = OrderedDict()  # hash id -> tokens of it cached
    reusable = total = 0
    for r in rows:
        n = scaled_prompt_tokens(r, block_tokens)
        total += n
        for i, h in enumerate(r.hash_ids):
            mine = min(block_tokens, n - i * block_tokens)
            before = cached.get(h, 0)
            reusable += min(mine, before)
            if before < mine:
                break
        for i, h in enumerate(r.hash_ids):
            cached[h] = max(cached.get(h, 0), min(block_tokens, n - i * block_tokens))
            cached.move_to_end(h)
        while len(cached) > capacity:
            cached.popitem(last=False)
    return PrefixReuse(reusable, total)
