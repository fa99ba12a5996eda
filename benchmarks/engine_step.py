"""CPU cost of one ``EngineModel.step`` in steady decode, at several batch sizes.

For each batch size N, N requests (512-token prompts, ignore_eos, long max_tokens) are admitted
and prefilled; then ``--steps`` steps are timed while all N decode.  Each size is measured in
``--trials`` independent trials; the table shows the median over steps of the trial with the
lowest median (the machine may be shared), as thread CPU time and wall time.  A fixed
pure-Python reference loop is timed alongside so results from different machines can be
compared.  Writes JSON (default ``benchmarks/results/engine_step.json``).

    .venv/bin/python benchmarks/engine_step.py [--steps 300] [--trials 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from ascendra_proxy.engine import (
    EngineConfig,
    EngineModel,
    EngineRequest,
    SamplingSpec,
    Tokenizer,
    load_profile,
)


def steady_engine(batch: int, profile_name: str, tokenizer: Tokenizer) -> EngineModel:
    config = EngineConfig(max_num_seqs=max(256, batch), max_num_batched_tokens=8192)
    engine = EngineModel(config, load_profile(profile_name), seed=1, tokenizer=tokenizer)
    for i in range(batch):
        ids = tokenizer.encode(tokenizer.make_text(511, seed=i))
        spec = SamplingSpec(max_tokens=6000, ignore_eos=True)
        engine.add_request(EngineRequest(f"r{i}", ids, spec, arrival_time=0.0))
    for _ in range(40):  # prefill everything, then warm up
        engine.step(0.0)
    return engine


def trial(engine: EngineModel, batch: int, steps: int) -> tuple[list[float], list[float]]:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(steps):
        w0 = time.perf_counter()
        c0 = time.thread_time()
        res = engine.step(0.0)
        cpu.append((time.thread_time() - c0) * 1e6)
        wall.append((time.perf_counter() - w0) * 1e6)
        assert res.num_decode_seqs == batch, (res.num_decode_seqs, batch)
    return cpu, wall


def bench(batch: int, steps: int, trials: int, profile: str, tok: Tokenizer) -> dict[str, float]:
    best: tuple[list[float], list[float]] | None = None
    for _ in range(trials):
        cpu, wall = trial(steady_engine(batch, profile, tok), batch, steps)
        if best is None or statistics.median(cpu) < statistics.median(best[0]):
            best = (cpu, wall)
    assert best is not None
    cpu = sorted(best[0])
    return {
        "running": batch,
        "median_cpu_us": statistics.median(cpu),
        "p90_cpu_us": cpu[int(0.9 * (len(cpu) - 1))],
        "median_wall_us": statistics.median(best[1]),
        "median_cpu_us_per_seq": statistics.median(cpu) / batch,
    }


def reference_loop_us() -> float:
    """CPU time of a fixed pure-Python loop (1e5 integer multiply-mods), best of 5."""
    runs = []
    for _ in range(5):
        c0 = time.thread_time()
        h = 1
        for i in range(100_000):
            h = (h * 0x1C8C5A3B96F2E4D1 + i) % 2305843009213693951
        runs.append((time.thread_time() - c0) * 1e6)
    return min(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU cost of one engine-model step")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--profile", default="a100-llama3-8b")
    parser.add_argument("--sizes", default="1,64,256")
    parser.add_argument("--out", default="benchmarks/results/engine_step.json")
    args = parser.parse_args()
    tok = Tokenizer()
    ref = reference_loop_us()
    sizes = [int(n) for n in args.sizes.split(",")]
    rows = [bench(n, args.steps, args.trials, args.profile, tok) for n in sizes]
    print(f"reference loop: {ref:.0f} us CPU")
    head = ("running", "median CPU us", "p90 CPU us", "median wall us", "us/seq")
    print(f"{head[0]:>8} {head[1]:>14} {head[2]:>11} {head[3]:>15} {head[4]:>7}")
    for r in rows:
        print(
            f"{r['running']:>8} {r['median_cpu_us']:>14.1f} {r['p90_cpu_us']:>11.1f} "
            f"{r['median_wall_us']:>15.1f} {r['median_cpu_us_per_seq']:>7.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "engine_step",
        "profile": args.profile,
        "steps": args.steps,
        "trials": args.trials,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "reference_loop_us": ref,
        "results": rows,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
