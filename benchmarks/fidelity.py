"""Fidelity: the same trace replayed against real vLLM and against the emulator, side by side.

Theory of operation: a slice of a request trace (default: the first 300 rows of the Azure
conversation trace in ``../shared/data/traces``) becomes a workload with the load generator's
own builder: arrivals re-timed to ``--rate`` (keeping the trace's burstiness), prompt lengths
scaled by ``--prompt-scale`` and capped so every request fits vLLM's ``max_model_len`` of
4,096.  Prompts are random token ids (ids both vocabularies know), sent with ``ignore_eos`` and
``max_tokens``, so both engines see identical prompt and output lengths.

One real vLLM (``scripts/engines.sh``, fcfs, compute on ``--cpus``) stays up for the whole
invocation; the emulator (vLLM flavour, ``--profile``, a fresh process per run) runs pinned to
the same core in its turn, and the client runs on the other core.  Runs alternate, real then
emulated, ``--runs`` times each; run *i* of both uses the same prompts (a new set per *i*, so
vLLM's prefix cache never hits).  Reported, pooled over each side's runs and per run:

* TTFT: first token - scheduled arrival;
* TBT: per request, the mean gap (last token - first token) / (tokens - 1);
* ITL: every inter-token gap, a chunk of k tokens after a gap g counting k gaps of g/k (vLLM
  merges tokens into one chunk when its API server falls behind; this keeps both comparable),

at p50 and p90, with the emulator / real ratio (goal: within 15%).  Writes JSON.

    .venv/bin/python benchmarks/fidelity.py [--num-requests 300] [--rate 8] [--runs 2]
        [--boost -20] [--out benchmarks/results/fidelity.json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from realvllm_bench import (
    MAX_MODEL_LEN,
    MODEL,
    REPO,
    PromptIds,
    own_session_boost,
    pin_client,
    real_vllm,
    request_body,
)
from realvllm_bench import (
    session as http_session,
)

from ascendra_proxy.emulator.process import emulator_process
from loadgen.arrivals import ArrivalSpec
from loadgen.client import Target
from loadgen.metrics import Outcome, RequestRecord
from loadgen.runner import Prepared, RunOptions, execute
from loadgen.workloads import SloClass, WorkItem, WorkloadSpec, build_workload

DEFAULT_TRACE = REPO.parent / "shared" / "data" / "traces" / "splitwise_conv.csv"
METRICS = ("ttft", "tbt", "itl")
GOAL = 0.15


# ---------------------------------------------------------------- workload


def workload(args: argparse.Namespace) -> list[WorkItem]:
    """The trace slice, re-timed to ``--rate``, lengths scaled and capped to fit the model."""
    spec = WorkloadSpec(
        num_requests=args.num_requests,
        arrivals=ArrivalSpec("trace", args.rate),
        slo_classes=(SloClass(1e3, 1e3),),
        trace=str(args.trace),
        seed=args.seed,
    )
    items = []
    for item in build_workload(spec):
        prompt = max(1, min(round(item.prompt_tokens * args.prompt_scale), args.max_prompt))
        output = max(1, min(item.output_tokens, args.max_output, MAX_MODEL_LEN - prompt))
        items.append(dataclasses.replace(item, prompt_tokens=prompt, output_tokens=output))
    return items


def prepared(items: list[WorkItem], seed: str) -> Prepared:
    prompts = PromptIds(seed)
    bodies = [request_body(prompts.make(i.prompt_tokens), i.output_tokens) for i in items]
    return Prepared(items, bodies, [i.prompt_tokens for i in items])


# ---------------------------------------------------------------- metrics


def samples(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    """TTFT, per-request mean TBT and per-token gaps (ms) of the completed requests."""
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    for r in records:
        if r.outcome is not Outcome.COMPLETED or r.ttft_s is None:
            continue
        out["ttft"].append(r.ttft_s * 1000.0)
        if r.tbt_mean_s is not None:
            out["tbt"].append(r.tbt_mean_s * 1000.0)
        for gap, tokens in r.gaps():
            out["itl"].extend([gap * 1000.0 / tokens] * tokens)
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None}
    p50, p90 = np.percentile(values, [50, 90])
    return {"p50": float(p50), "p90": float(p90)}


def run_summary(records: Sequence[RequestRecord], duration_s: float) -> dict[str, Any]:
    s = samples(records)
    completed = [r for r in records if r.outcome is Outcome.COMPLETED]
    wrong_len = sum(
        1
        for r in completed
        if r.tokens != r.output_tokens or r.prompt_tokens_reported not in (None, r.prompt_tokens)
    )
    return {
        "requests": len(records),
        "completed": len(completed),
        "failed": [r.error for r in records if r.outcome is Outcome.FAILED][:5],
        "wrong_lengths": wrong_len,
        "duration_s": round(duration_s, 2),
        "output_tok_s": round(sum(r.tokens for r in records) / max(duration_s, 1e-9), 1),
        **{m: percentiles(s[m]) for m in METRICS},
    }


# ---------------------------------------------------------------- runs


async def replay(url: str, prep: Prepared) -> tuple[list[RequestRecord], float]:
    async with http_session() as http:
        result = await execute(http, Target(url, MODEL), prep, RunOptions(progress=False))
    return result.records, result.duration_s


def emulator_args(args: argparse.Namespace, run: int) -> list[str]:
    return [
        "--flavor",
        "vllm",
        "--profile",
        args.profile,
        "--model",
        MODEL,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--scheduling-policy",
        "fcfs",
        "--seed",
        str(run),
    ]


@dataclasses.dataclass
class Side:
    """Everything measured on one engine (real or emulated) over its runs."""

    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pooled: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {m: [] for m in METRICS}
    )

    def add(self, run: int, url: str, prep: Prepared) -> None:
        records, duration = asyncio.run(replay(url, prep))
        self.runs.append({"run": run, **run_summary(records, duration)})
        for m, values in samples(records).items():
            self.pooled[m].extend(values)
        r = self.runs[-1]
        print(
            f"  run {run}: {r['completed']}/{r['requests']} completed, "
            f"TTFT p50 {r['ttft']['p50']:.1f} ms, TBT p50 {r['tbt']['p50']:.2f} ms",
            flush=True,
        )


def measure(args: argparse.Namespace, url: str, items: list[WorkItem]) -> dict[str, Side]:
    """Alternate real and emulated runs; run ``i`` of both replays the same prompts."""
    sides = {"real": Side(), "emulator": Side()}
    for run in range(args.runs):
        prep = prepared(items, f"fidelity-{args.seed}-{run}")
        print(f"run {run}: real vLLM", flush=True)
        sides["real"].add(run, url, prep)
        time.sleep(args.cooldown)
        print(f"run {run}: emulator ({args.profile})", flush=True)
        with emulator_process(emulator_args(args, run), cpus=args.cpus) as emu:
            sides["emulator"].add(run, emu.url, prep)
        time.sleep(args.cooldown)
    return sides


# ---------------------------------------------------------------- report and main


def comparison(sides: dict[str, Side]) -> list[dict[str, Any]]:
    rows = []
    for m in METRICS:
        real, emu = percentiles(sides["real"].pooled[m]), percentiles(sides["emulator"].pooled[m])
        for q in ("p50", "p90"):
            a, b = real[q], emu[q]
            ratio = b / a if a and b is not None else None
            rows.append({"metric": m, "q": q, "real_ms": a, "emulator_ms": b, "ratio": ratio})
    return rows


def table(rows: list[dict[str, Any]], sides: dict[str, Side]) -> str:
    names = {"ttft": "TTFT", "tbt": "TBT mean/request", "itl": "inter-token gap"}
    lines = [f"{'metric':<22} {'real vLLM ms':>13} {'emulator ms':>12} {'emu/real':>9}  within"]
    for r in rows:
        ok = r["ratio"] is not None and abs(r["ratio"] - 1.0) <= GOAL
        lines.append(
            f"{names[r['metric']] + ' ' + r['q']:<22} {r['real_ms']:>13.2f} "
            f"{r['emulator_ms']:>12.2f} {r['ratio']:>9.3f}  {'yes' if ok else 'NO'}"
        )
    lines.append(noise_line(sides["real"]))
    lines.append("per run (TTFT p50/p90, TBT p50/p90, ITL p50/p90 in ms):")
    for name, side in sides.items():
        for r in side.runs:
            cells = "  ".join(
                f"{r[m]['p50']:.1f}/{r[m]['p90']:.1f}" for m in METRICS if r[m]["p50"] is not None
            )
            lines.append(f"  {name:<8} run {r['run']}: {cells}  ({r['completed']} completed)")
    return "\n".join(lines)


def run_spread(side: Side) -> dict[str, float]:
    """Largest / smallest per-run value of each metric: how much runs of one engine differ."""
    out = {}
    for m in METRICS:
        for q in ("p50", "p90"):
            values = [r[m][q] for r in side.runs if r[m][q]]
            if len(values) > 1:
                out[f"{m} {q}"] = max(values) / min(values)
    return out


def noise_line(real: Side) -> str:
    spread = run_spread(real)
    if not spread:
        return "real vLLM run-to-run spread: one run only"
    cells = ", ".join(f"{k} x{v:.2f}" for k, v in spread.items())
    return f"real vLLM run-to-run spread (max/min over its runs): {cells}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    p.add_argument("--num-requests", type=int, default=300)
    p.add_argument("--rate", type=float, default=8.0, help="req/s (trace re-timed)")
    p.add_argument("--prompt-scale", type=float, default=0.5)
    p.add_argument("--max-prompt", type=int, default=3072)
    p.add_argument("--max-output", type=int, default=512)
    p.add_argument("--runs", type=int, default=2, help="runs per engine, alternating")
    p.add_argument("--profile", default="cpu-tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cooldown", type=float, default=2.0, help="seconds between runs")
    p.add_argument("--kv-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--cpus", default="0", help="core for vLLM's compute and the emulator")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--boost", type=int, default=0, metavar="NICE", help="autogroup nice, e.g. -20")
    p.add_argument("--url", help="an already running vLLM (fcfs, as engines.sh starts it)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fidelity.json"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    own_session_boost(args.boost)
    pin_client(args.client_cpus)
    items = workload(args)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    if args.url:
        sides = measure(args, args.url, items)
    else:
        with real_vllm(f"fidelity-{os.getpid()}", args.kv_bytes, args.cpus, args.boost) as url:
            sides = measure(args, url, items)
    rows = comparison(sides)
    print(table(rows, sides))
    doc = {
        "started": started,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "loadavg_after": os.getloadavg(),
        "machine": platform.platform(),
        "goal": GOAL,
        "comparison": rows,
        "real_run_spread": run_spread(sides["real"]),
        "runs": {name: side.runs for name, side in sides.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
