"""A Mooncake trace in the simulator: block-exact prefix hits, per-class results."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from sim_helpers import sim_config

from ascendra_proxy.sim.report import point_document
from ascendra_proxy.sim.simulator import Simulator
from loadgen.arrivals import ArrivalSpec
from loadgen.mooncake import prefix_reuse, read_mooncake
from loadgen.workloads import SloClass, WorkloadSpec, build_workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "lg"))
from mooncake_fixture import make_rows, write_trace


def test_one_engine_hits_exactly_the_traces_reusable_blocks(tmp_path: Path) -> None:
    rows = make_rows(60)
    path = write_trace(tmp_path / "m.jsonl", rows)
    # 0.05 req/s: every request ends long before the next arrives (a few hundred ms each)
    spec = WorkloadSpec(
        len(rows),
        ArrivalSpec("constant", 0.05),
        (SloClass(1.0, 0.15, 1.0, "chat"),),
        trace=str(path),
    )
    items = [replace(it, output_tokens=4) for it in build_workload(spec)]
    cfg = sim_config(lp=1, hp=0, num_gpu_blocks=60_000, max_model_len=16384)
    doc = point_document(Simulator(cfg, items, seed=2).run(), 0.05)
    expected = prefix_reuse(read_mooncake(path), engine_block=16)
    (engine,) = doc["sim"]["backends"]
    assert engine["prefix_cache_hit_rate"] == round(expected.share, 6)
    assert engine["prompt_tokens"] == expected.prompt_tokens
    (cls,) = doc["summary"]["attainment_by_class"]
    assert (cls["name"], cls["requests"]) == ("chat", len(rows))
    assert {r["slo_class"] for r in doc["requests"]} == {"chat"}
