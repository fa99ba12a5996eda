"""How long one tick's prediction takes: feature building + one batched predict per target.

Builds a tick-sized batch (``--rows`` questions over ``--backends`` backends with a spread
of queue positions, prompts, progress and scraped gauges), then times, over ``--repeat``
calls: the analytical model alone, the feature matrix alone, each LightGBM booster alone,
and the whole ``LearnedPredictor.predict`` (analytical answer + features + both boosters).
The model is ``--model`` or, without one, a model of the default size trained here on
synthetic rows.  Prints a table (min / median / p99 milliseconds) and writes JSON.

    .venv/bin/python benchmarks/predictor_speed.py --model model.json --out speed.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from ascendra_proxy.core.predict import BackendFeatures, QueryBatch
from ascendra_proxy.predictor.features import FeatureBuilder
from ascendra_proxy.predictor.model import LearnedPredictor, parse_model, read_model
from ascendra_proxy.predictor.rows import LabelledRows
from ascendra_proxy.predictor.train import analytical_for, train

PROFILE = "a100-llama3-8b"


def make_batch(rows: int, backends: int, seed: int = 0, resident: float = 0.7) -> QueryBatch:
    rng = np.random.default_rng(seed)
    bs = tuple(
        BackendFeatures(
            name=f"b{i}",
            role="hp" if i == backends - 1 else "lp",
            profile=PROFILE,
            inflight=int(rng.integers(0, 300)),
            unstarted=int(rng.integers(0, 20)),
            unstarted_tokens=int(rng.integers(0, 8000)),
            decode_seqs=int(rng.integers(0, 250)),
            decode_context_tokens=int(rng.integers(0, 300_000)),
            running=int(rng.integers(0, 256)),
            waiting=int(rng.integers(0, 20)),
            kv_usage=float(rng.random()),
            scrape_age_s=float(rng.random()),
            recent_step_s=float(0.01 + 0.05 * rng.random()),
            max_num_seqs=256,
            max_num_batched_tokens=2048,
        )
        for i in range(backends)
    )
    return QueryBatch(
        backends=bs,
        backend_index=rng.integers(0, backends, rows).astype(np.int64),
        prompt_tokens=rng.integers(10, 4000, rows).astype(np.float64),
        generated_tokens=rng.integers(0, 400, rows).astype(np.float64),
        waited_s=rng.random(rows) * 2,
        queued_ahead_tokens=rng.integers(0, 8000, rows).astype(np.float64),
        cached_tokens=np.zeros(rows),
        resident=rng.random(rows) < resident,
        horizon_tokens=32,
    )


def synthetic_model(seed: int) -> bytes:
    """A default-size model trained on synthetic labels (only its size matters here)."""
    batch = make_batch(6000, 6, seed)
    an = analytical_for([PROFILE])
    p = an.predict(batch)
    rng = np.random.default_rng(seed)
    ttft = p.ttft_s * (0.5 + rng.random(len(batch)))
    nt = p.next_k_s / 32 * (0.5 + rng.random(len(batch)))
    rows = LabelledRows(
        batch,
        ttft,
        nt,
        np.ones(len(batch)),
        np.full(len(batch), 0.15),
        tuple(str(i) for i in range(len(batch))),
        {},
    )
    return train(rows, holdout=0.0, seed=seed, analytical=an).model_bytes


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    for _ in range(20):
        fn()
    gc.collect()
    gc.disable()
    try:
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    ms = np.asarray(ts) * 1e3
    return {
        "min_ms": round(float(ms.min()), 4),
        "median_ms": round(float(np.median(ms)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model file (default: a synthetic one of the default size)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--backends", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument(
        "--resident-share",
        type=float,
        nargs="+",
        default=[0.7, 0.0],
        help="shares of streaming rows to time (0: every row waits for its first token)",
    )
    ap.add_argument("--out", default="predictor_speed.json")
    args = ap.parse_args()
    model = read_model(args.model) if args.model else parse_model(synthetic_model(0))
    an = analytical_for([PROFILE])
    pred = LearnedPredictor(args.model or "<synthetic>", an, model)
    rows: dict[str, dict[str, float]] = {}
    for share in args.resident_share:
        batch = make_batch(args.rows, args.backends, 1, share)
        builder = FeatureBuilder(an, model.profiles)
        a = an.predict(batch)
        x = builder.build(batch, a)
        tag = f"[{share:.0%} streaming]"
        rows[f"analytical predict {tag}"] = timed(partial(an.predict, batch), args.repeat)
        rows[f"feature matrix {tag}"] = timed(partial(builder.build, batch, a), args.repeat)
        for name, t in model.targets.items():
            fn = partial(t.booster.predict, x, num_threads=1)
            rows[f"booster {name}, all rows {tag}"] = timed(fn, args.repeat)
        rows[f"LearnedPredictor.predict {tag}"] = timed(partial(pred.predict, batch), args.repeat)
    trees = {n: t.booster.num_trees() for n, t in model.targets.items()}
    print(f"{args.rows} rows, {args.backends} backends, trees {trees}, {args.repeat} calls")
    print(f"{'step':<52} {'min ms':>7} {'median ms':>9} {'p99 ms':>7}")
    for name, r in rows.items():
        print(f"{name:<52} {r['min_ms']:>7.3f} {r['median_ms']:>9.3f} {r['p99_ms']:>7.3f}")
    for share in args.resident_share:
        total = rows[f"LearnedPredictor.predict [{share:.0%} streaming]"]
        ok = "met" if total["median_ms"] <= 2.0 else "NOT met"
        print(
            f"goal <= 2 ms per tick, {share:.0%} streaming: {ok} "
            f"(median {total['median_ms']:.3f} ms, min {total['min_ms']:.3f} ms)"
        )
    out = {
        "rows": args.rows,
        "backends": args.backends,
        "trees": trees,
        "model": args.model,
        "machine": platform.processor() or platform.machine(),
        "timings": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
