"""CPU cost of one Ascendra policy tick with 1,000 requests in flight (predictions included).

The scenes are the ones ``tests/unit/core/ascendra/test_asc_tick_cost.py`` checks (4 LP + 2
HP A100 backends, 1,000 requests: a few held in the proxy queue, 3 not started per LP
backend, the rest streaming; *calm* asks for almost nothing, *burst* has 300 held requests).
Each scene is ticked ``--reps`` times; the table shows the minimum and the median wall time of
one tick (the machine may be shared: read the minimum as the cost, the median as what a busy
machine adds). Goal: a calm tick under 2 ms median. Writes JSON.

    .venv/bin/python benchmarks/tick_cost.py [--reps 200] [--out benchmarks/results/tick_cost.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit" / "core" / "ascendra"))

from test_asc_tick_cost import SCENES, measure, scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/tick_cost.json")
    args = ap.parse_args()
    rows = []
    print(f"{'scene':<24} {'actions':>7} {'min ms':>8} {'median ms':>10}")
    for label, held, spread, params in SCENES:
        best, median, actions = measure(scene(held, spread, params), reps=args.reps)
        rows.append({"scene": label, "actions": actions, "min_ms": best, "median_ms": median})
        print(f"{label:<24} {actions:>7} {best:>8.2f} {median:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "reps": args.reps}
    args.out.write_text(json.dumps({"meta": meta, "scenes": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
