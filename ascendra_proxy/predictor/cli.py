"""``ascendra-proxy train``: fit the learned slack predictor on recorded training rows.

    ascendra-proxy train --data rows.jsonl [more.jsonl ...] --out model.json \\
        [--quantile 0.9] [--report report.json] [--seed 0] [--holdout 0.2]

Reads the rows (rotated siblings ``rows.jsonl.1``... included), trains, prints the held-out
comparison with the analytical model and the feature importances, writes the model file
atomically (a temporary file renamed into place, so a proxy watching it never reads half
a file) and, with ``--report``, the same figures as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from ascendra_proxy.predictor.rows import RowsError, read_rows
from ascendra_proxy.predictor.train import DEFAULT_PARAMS, format_report, train

__all__ = ["add_arguments", "run", "write_atomic"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH", help="JSONL rows")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.add_argument("--quantile", type=float, default=0.9, help="quantile (default 0.9)")
    parser.add_argument("--report", help="also write the report as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=0.2, help="held-out share (0: none)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_PARAMS["num_boost_round"],
        help="trees of the TTFT booster (more: slower ticks)",
    )
    parser.add_argument(
        "--leaves", type=int, default=DEFAULT_PARAMS["num_leaves"], help="leaves per TTFT tree"
    )
    parser.add_argument("--slo-ttft", type=float, default=1.0, help="SLO for rows without one")
    parser.add_argument("--slo-tbt", type=float, default=0.15, help="SLO for rows without one")


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(target)


def run(args: argparse.Namespace) -> int:
    try:
        rows = read_rows(args.data)
        result = train(
            rows,
            quantile=args.quantile,
            seed=args.seed,
            holdout=args.holdout,
            params={"num_boost_round": args.rounds, "num_leaves": args.leaves},
            slo_defaults=(args.slo_ttft, args.slo_tbt),
        )
    except (RowsError, ValueError) as e:
        print(f"ascendra-proxy train: {e}", file=sys.stderr)
        return 2
    write_atomic(args.out, result.model_bytes)
    print(format_report(result.report))
    print(f"model written to {args.out}")
    if args.report:
        opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        write_atomic(args.report, orjson.dumps(result.report, option=opts) + b"\n")
    return 0
