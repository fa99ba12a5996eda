"""Feature extraction on hand-built states: every column means what its name says."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from predictor_builders import PROFILE, analytical, backend

from ascendra_proxy.core.predict import PredictionQuery, QueryBatch
from ascendra_proxy.predictor.features import FEATURE_NAMES, SCHEMA_VERSION, FeatureBuilder


def col(x: np.ndarray, name: str) -> list[float]:
    return [float(v) for v in x[:, FEATURE_NAMES.index(name)]]


@pytest.fixture
def batch() -> QueryBatch:
    lp = backend("lp-0", unstarted=2, unstarted_tokens=3000, waiting=5)
    hp = backend(
        "hp-0",
        role="hp",
        profile="unknown-gpu",
        running=None,
        waiting=None,
        kv_usage=None,
        scrape_age_s=None,
        recent_step_s=None,
        max_num_batched_tokens=1024,
    )
    rows = [
        PredictionQuery(0, 1000, 0, 0.5, 2000, 200, False),  # second in lp-0's queue
        PredictionQuery(1, 500, 20, 1.5, 0, 0, False),  # a continuation sent to hp-0
        PredictionQuery(0, 300, 40, 2.0, 0, 0, True),  # streaming on lp-0
    ]
    return QueryBatch.from_rows([lp, hp], rows, horizon_tokens=16)


def test_matrix_shape_type_and_layout(batch: QueryBatch) -> None:
    x = FeatureBuilder(analytical(), [PROFILE]).build(batch)
    assert x.shape == (3, len(FEATURE_NAMES))
    assert x.dtype == np.float32
    assert x.flags.c_contiguous
    assert SCHEMA_VERSION >= 1
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_row_columns(batch: QueryBatch) -> None:
    x = FeatureBuilder(analytical(), [PROFILE]).build(batch)
    assert col(x, "prompt_tokens") == [1000, 500, 300]
    assert col(x, "generated_tokens") == [0, 20, 40]
    assert col(x, "waited_s") == [0.5, 1.5, 2.0]
    assert col(x, "queued_ahead_tokens") == [2000, 0, 0]
    assert col(x, "cached_tokens") == [200, 0, 0]
    assert col(x, "resident") == [0, 0, 1]
    assert col(x, "prefill_tokens") == [800, 520, 340]  # prompt + generated - cached


def test_backend_columns_and_missing_values(batch: QueryBatch) -> None:
    x = FeatureBuilder(analytical(), [PROFILE]).build(batch)
    assert col(x, "role") == [0, 1, 0]  # lp, hp, lp
    profile = col(x, "profile")
    assert profile[0] == 0 and profile[2] == 0 and math.isnan(profile[1])  # unknown -> NaN
    for name in ("scraped_running", "scraped_waiting", "scraped_kv_usage", "scrape_age_s"):
        v = col(x, name)
        assert math.isnan(v[1]), name  # never scraped
        assert not math.isnan(v[0]), name
    assert col(x, "scraped_kv_usage")[0] == pytest.approx(0.25)
    assert col(x, "scrape_age_s")[0] == pytest.approx(0.2)
    assert math.isnan(col(x, "recent_step_s")[1])
    assert col(x, "max_num_batched_tokens") == [2048, 1024, 2048]


def test_derived_columns(batch: QueryBatch) -> None:
    x = FeatureBuilder(analytical(), [PROFILE]).build(batch)
    assert col(x, "work_tokens") == [2800, 520, 0]  # ahead + own prefill; resident: none
    assert col(x, "work_steps") == pytest.approx([2800 / 2048, 520 / 1024, 0])
    # prefill queued behind: lp-0 has 3000 queued, 2800 of it up to and including row 0
    assert col(x, "behind_tokens")[0] == 200
    assert col(x, "behind_tokens")[2] == 3000  # a resident stream: all of it
    unknown = col(x, "unknown_waiting")
    assert unknown[0] == 3 and math.isnan(unknown[1])  # scraped 5 waiting, proxy knows 2


def test_analytical_columns_match_the_analytical_model(batch: QueryBatch) -> None:
    an = analytical()
    x = FeatureBuilder(an, [PROFILE]).build(batch)
    p = an.predict(batch)
    assert col(x, "an_ttft_s") == pytest.approx(p.ttft_s.tolist(), rel=1e-6)
    assert col(x, "an_next_token_s") == pytest.approx((p.next_k_s / 16).tolist(), rel=1e-6)
    assert col(x, "an_step_mixed_s")[0] > col(x, "an_step_decode_s")[0] > 0


def test_empty_batch() -> None:
    b = QueryBatch.from_rows([backend()], [], horizon_tokens=8)
    assert FeatureBuilder(analytical()).build(b).shape == (0, len(FEATURE_NAMES))


def test_dispatch_columns_are_nan_unless_known(batch: QueryBatch) -> None:
    b = FeatureBuilder(analytical(), [PROFILE])
    x = b.build(batch)
    for name in ("on_backend_s", "head_age_s", "busy_s", "work_left_tokens", "slack_s"):
        assert all(math.isnan(v) for v in col(x, name)), name
    extras = {
        "on_backend_s": np.array([0.1, 0.0, 3.0]),
        "head_age_s": np.array([0.5, 0.0, 0.5]),
        "last_first_token_s": np.array([0.2, np.nan, 0.2]),  # hp-0 has no streams
        "slo_ttft_s": np.array([1.0, 2.0, 1.0]),
    }
    x = b.build(batch, extras=extras)
    assert col(x, "on_backend_s") == pytest.approx([0.1, 0.0, 3.0])
    # lp-0's head was dispatched 0.5 s ago, but the request before it got its first token
    # 0.2 s ago: the engine has been on the head for 0.2 s
    assert col(x, "busy_s") == pytest.approx([0.2, 0.0, 0.2])
    s_mix = col(x, "an_step_mixed_s")[0]
    rate = (2048 - 2) / s_mix  # lp-0: budget minus its 2 decodes, per mixed step
    progress = col(x, "progress_tokens")
    assert progress[0] == pytest.approx(0.2 * rate, rel=1e-5) and progress[1] == 0
    left = col(x, "work_left_tokens")
    assert left[0] == pytest.approx(max(2800 - 0.2 * rate, 0), abs=0.5)
    assert left[1] == 520  # nothing done yet on hp-0
    assert col(x, "work_left_steps")[1] == pytest.approx(520 / (1024 - 2))
    an = col(x, "an_ttft_s")
    assert col(x, "an_ttft_left_s")[0] == pytest.approx(max(an[0] - 0.2, 0), abs=1e-6)
    assert col(x, "slack_s") == pytest.approx([0.5, 0.5, -1.0])  # SLO minus time waited


def test_dispatch_times_from_the_batch_types() -> None:
    """The policy passes dispatch times in the batch types; the features read them."""
    timed = replace(backend("lp-0"), oldest_unstarted_s=0.4, last_first_token_s=0.1)
    plain = QueryBatch.from_rows([timed], [PredictionQuery(0, 100, 0, 1.0, 0, 0, False)], 8)
    batch = replace(plain, on_backend_s=np.array([0.3]))
    x = FeatureBuilder(analytical(), [PROFILE]).build(batch)
    assert col(x, "on_backend_s") == pytest.approx([0.3])
    assert col(x, "head_age_s") == pytest.approx([0.4])
    assert col(x, "last_first_token_s") == pytest.approx([0.1])
    assert col(x, "busy_s") == pytest.approx([0.1])
