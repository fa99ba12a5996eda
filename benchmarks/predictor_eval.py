"""Held-out evaluation of a trained slack predictor, per recorded run and overall.

Every row of the given files is held out (train on other runs, e.g. another seed), and
the model answers them twice (with the dispatch times the tap recorded, and without, as
for a policy that does not pass them yet) next to the analytical model.  Figures are the
train report's (see ``ascendra_proxy.predictor.train.evaluate``): TTFT errors over
first-token rows as a share of each row's TTFT SLO, calibration = share of actual values
at or under the prediction.  Prints a table per run file and overall; writes JSON.

    .venv/bin/python benchmarks/predictor_eval.py --model model.json \\
        --data heldout/*.jsonl --out eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ascendra_proxy.predictor.model import LearnedPredictor, read_model
from ascendra_proxy.predictor.rows import LabelledRows, read_rows
from ascendra_proxy.predictor.train import analytical_for, evaluate

KEYS = ("ttft_p90_abs_err_over_slo", "ttft_mae_over_slo", "ttft_calibration")


def figures(pred: LearnedPredictor, rows: LabelledRows) -> dict[str, dict[str, float]]:
    return {
        "learned": evaluate(rows, pred.predict_with(rows.batch, rows.extras), 1.0, 0.15),
        "learned_without_dispatch_times": evaluate(rows, pred.predict(rows.batch), 1.0, 0.15),
        "analytical": evaluate(rows, pred.fallback.predict(rows.batch), 1.0, 0.15),
    }


def line(name: str, n: int, f: dict[str, dict[str, float]]) -> str:
    a, b, c = (f[k] for k in ("learned", "learned_without_dispatch_times", "analytical"))
    key = "ttft_p90_abs_err_over_slo"
    return (
        f"{name:<44} {n:>7} {a.get(key, float('nan')):>8.3f} {b.get(key, float('nan')):>9.3f}"
        f" {c.get(key, float('nan')):>8.3f} {a.get('ttft_calibration', float('nan')):>7.3f}"
        f" {a.get('next_k_p90_abs_err_over_slo', float('nan')):>8.3f}"
        f" {c.get('next_k_p90_abs_err_over_slo', float('nan')):>8.3f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--out", default="predictor_eval.json")
    args = ap.parse_args()
    model = read_model(args.model)
    pred = LearnedPredictor(args.model, analytical_for(list(model.profiles)), model)
    print(
        f"{'run (TTFT p90 |err| / SLO; next-k p90)':<44} {'1st rows':>7} {'learned':>8}"
        f" {'(no disp)':>9} {'analyt.':>8} {'calib.':>7} {'nk lrn':>8} {'nk ana':>8}"
    )
    out: dict[str, Any] = {"model": args.model, "runs": {}}
    for path in sorted(args.data):
        rows = read_rows([path])
        n = int((~rows.batch.resident).sum())
        f = figures(pred, rows)
        out["runs"][Path(path).stem] = {"first_token_rows": n, **f}
        print(line(Path(path).stem, n, f))
    rows = read_rows(args.data)
    f = figures(pred, rows)
    out["overall"] = {"first_token_rows": int((~rows.batch.resident).sum()), **f}
    print(line("ALL", out["overall"]["first_token_rows"], f))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
