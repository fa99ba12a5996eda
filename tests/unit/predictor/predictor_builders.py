"""Builders shared by the predictor tests: backend features, batches, synthetic rows."""

from __future__ import annotations

import numpy as np

from ascendra_proxy.core.predict import AnalyticalPredictor, BackendFeatures, QueryBatch
from ascendra_proxy.engine.profile import load_profile
from ascendra_proxy.predictor.rows import LabelledRows

PROFILE = "a100-llama3-8b"


def analytical() -> AnalyticalPredictor:
    return AnalyticalPredictor({PROFILE: load_profile(PROFILE)})


def backend(name: str = "lp-0", **kw: object) -> BackendFeatures:
    base: dict[str, object] = {
        "name": name,
        "role": "lp",
        "profile": PROFILE,
        "inflight": 4,
        "unstarted": 2,
        "unstarted_tokens": 3000,
        "decode_seqs": 2,
        "decode_context_tokens": 2400,
        "running": 3,
        "waiting": 1,
        "kv_usage": 0.25,
        "scrape_age_s": 0.2,
        "recent_step_s": 0.03,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 2048,
    }
    base.update(kw)
    return BackendFeatures(**base)  # type: ignore[arg-type]


def random_batch(n: int, seed: int, backends: int = 4) -> QueryBatch:
    rng = np.random.default_rng(seed)
    bs = tuple(
        backend(
            f"b{i}",
            role="hp" if i == 0 else "lp",
            unstarted=int(rng.integers(0, 10)),
            unstarted_tokens=int(rng.integers(0, 6000)),
            decode_seqs=int(rng.integers(0, 100)),
            decode_context_tokens=int(rng.integers(0, 100_000)),
        )
        for i in range(backends)
    )
    return QueryBatch(
        backends=bs,
        backend_index=rng.integers(0, backends, n).astype(np.int64),
        prompt_tokens=rng.integers(10, 3000, n).astype(np.float64),
        generated_tokens=np.zeros(n),
        waited_s=rng.random(n),
        queued_ahead_tokens=rng.integers(0, 6000, n).astype(np.float64),
        cached_tokens=np.zeros(n),
        resident=rng.random(n) < 0.3,
        horizon_tokens=8,
    )


def synthetic_rows(n: int, seed: int) -> LabelledRows:
    """Rows whose labels depend on the features in a way the analytical model misses: the
    time to first token grows with the queue ahead, twice as fast on HP backends."""
    batch = random_batch(n, seed)
    rng = np.random.default_rng(seed + 1)
    hp = np.array([b.role == "hp" for b in batch.backends])[batch.backend_index]
    work = batch.queued_ahead_tokens + batch.prompt_tokens
    ttft = np.where(batch.resident, 0.02, work / 8000.0 * np.where(hp, 2.0, 1.0))
    ttft = ttft * (0.9 + 0.2 * rng.random(n))
    per_token = 0.02 + 0.00002 * batch.queued_ahead_tokens * rng.random(n)
    return LabelledRows(
        batch,
        ttft,
        per_token,
        np.ones(n),
        np.full(n, 0.1),
        tuple(f"run|r{i}" for i in range(n)),
        {},
    )
