"""Fidelity: the same trace replayed against real vLLM and against the emulator, side by side.

Theory of operation: a slice of a request trace (default: the first 300 rows of the Azure
conversation trace in ``../shared/data/traces``) becomes a workload with the load generator's
own builder: arrivals re-timed to ``--rate`` (keeping the trace's burstiness), prompt lengths
scaled by ``--prompt-scale`` and capped so every request fits vLLM's ``max_model_len`` of
4,096.  Prompts are random token ids (ids both vocabularies know), sent with ``ignore_eos`` and
``max_tokens``, so both engines see identical prompt and output lengths.

One real vLLM (``scripts/engines.sh``, fcfs, all of it pinned to ``--cpus``) stays up for the
whole invocation; the emulator (vLLM flavour, ``--profile``, a fresh process per run) runs
pinned to the same core in its turn, and the client runs on the other core (``--boost``
raises all of them above other users' work, see ``realvllm_bench.py``).  Runs alternate, real
then emulated, ``--runs`` times each; run *i* of both uses the same prompts (a new set per
*i*, so vLLM's prefix cache never hits).  Reported, at p50 and p90, with the emulator / real
ratio (goal: within 15%):

* TTFT: first token - scheduled arrival;
* TBT: per request, the mean gap (last token - first token) / (tokens - 1);
* ITL: every inter-token gap, a chunk of k tokens after a gap g counting k gaps of g/k (vLLM
  merges tokens into one chunk when its API server falls behind; this keeps both comparable),

each pooled over a side's runs and as the median over its runs of the per-run value (which
one run slowed down by other users' load does not move).  Per run it also records how long
the engine's threads waited for a CPU (``/proc/*/schedstat``), the real vLLM's run-to-run
spread, and writes everything as JSON; ``--report FILE`` prints the table of a saved run.

    .venv/bin/python benchmarks/fidelity.py [--rate 4] [--runs 3] [--num-requests 300]
        [--boost -20] [--out benchmarks/results/fidelity.json]
    .venv/bin/python benchmarks/fidelity.py --report benchmarks/results/fidelity.json
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
    RealVllm,
    group_pids,
    own_session_boost,
    pin_client,
    real_vllm,
    request_body,
    sched_totals,
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

    def add(self, run: int, url: str, prep: Prepared, pids: Sequence[int]) -> None:
        """One run; ``pids`` are the engine's processes, whose CPU time and time spent
        waiting for a CPU are recorded (how starved the run was on the shared machine)."""
        cpu0, wait0 = sched_totals(pids)
        records, duration = asyncio.run(replay(url, prep))
        cpu1, wait1 = sched_totals(pids)
        summary = run_summary(records, duration)
        tokens = sum(r.tokens for r in records)
        summary["engine_cpu_ms_per_token"] = round((cpu1 - cpu0) * 1e3 / max(tokens, 1), 3)
        summary["engine_cpu_wait_ms_per_s"] = round((wait1 - wait0) * 1e3 / duration, 1)
        self.runs.append({"run": run, **summary})
        for m, values in samples(records).items():
            self.pooled[m].extend(values)
        r = self.runs[-1]
        print(
            f"  run {run}: {r['completed']}/{r['requests']} completed, "
            f"TTFT p50 {r['ttft']['p50']:.1f} ms, TBT p50 {r['tbt']['p50']:.2f} ms, engine "
            f"CPU {r['engine_cpu_ms_per_token']} ms/token, waited "
            f"{r['engine_cpu_wait_ms_per_s']} ms/s for a CPU",
            flush=True,
        )


def measure(args: argparse.Namespace, real: RealVllm, items: list[WorkItem]) -> dict[str, Side]:
    """Alternate real and emulated runs; run ``i`` of both replays the same prompts."""
    sides = {"real": Side(), "emulator": Side()}
    real_pids = group_pids(real.pid) if real.pid else []
    for run in range(args.runs):
        prep = prepared(items, f"fidelity-{args.seed}-{run}")
        print(f"run {run}: real vLLM", flush=True)
        sides["real"].add(run, real.url, prep, real_pids)
        time.sleep(args.cooldown)
        print(f"run {run}: emulator ({args.profile})", flush=True)
        with emulator_process(emulator_args(args, run), cpus=args.cpus) as emu:
            sides["emulator"].add(run, emu.url, prep, [emu.pid])
        time.sleep(args.cooldown)
    return sides


# ---------------------------------------------------------------- report and main


NAMES = {"ttft": "TTFT", "tbt": "TBT mean/request", "itl": "inter-token gap"}


def _ratio(real: float | None, emulated: float | None) -> float | None:
    return emulated / real if real and emulated is not None else None


def comparison(sides: dict[str, Side]) -> list[dict[str, Any]]:
    """Per metric and quantile: pooled over all runs of a side, and the median over its runs
    of the per-run value (robust to one run that other users' load slowed down)."""
    rows = []
    for m in METRICS:
        real, emu = percentiles(sides["real"].pooled[m]), percentiles(sides["emulator"].pooled[m])
        for q in ("p50", "p90"):
            a, b = real[q], emu[q]
            ra = median_of_runs(sides["real"].runs, m, q)
            rb = median_of_runs(sides["emulator"].runs, m, q)
            rows.append(
                {
                    "metric": m,
                    "q": q,
                    "real_ms": a,
                    "emulator_ms": b,
                    "ratio": _ratio(a, b),
                    "real_runs_median_ms": ra,
                    "emulator_runs_median_ms": rb,
                    "runs_median_ratio": _ratio(ra, rb),
                }
            )
    return rows


def median_of_runs(runs: list[dict[str, Any]], metric: str, q: str) -> float | None:
    values = [r[metric][q] for r in runs if r[metric][q] is not None]
    return float(np.median(values)) if values else None


def _cell(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _ok(ratio: float | None) -> str:
    return "yes" if ratio is not None and abs(ratio - 1.0) <= GOAL else "NO"


def table(doc: dict[str, Any]) -> str:
    """The report of a results document (printed at the end of a run, or by ``--report``)."""
    head = f"{'':<22} {'pooled over runs':^34}   {'median over runs':^34}"
    cols = f"{'real ms':>10} {'emu ms':>9} {'emu/real':>8} ok"
    lines = [head, f"{'metric':<22} {cols}   {cols}"]
    for r in doc["comparison"]:
        pooled = (
            f"{_cell(r['real_ms'], 10)} {_cell(r['emulator_ms'], 9)} "
            f"{_cell(r['ratio'], 8, 3)} {_ok(r['ratio'])}"
        )
        by_run = (
            f"{_cell(r['real_runs_median_ms'], 10)} {_cell(r['emulator_runs_median_ms'], 9)} "
            f"{_cell(r['runs_median_ratio'], 8, 3)} {_ok(r['runs_median_ratio'])}"
        )
        lines.append(f"{NAMES[r['metric']] + ' ' + r['q']:<22} {pooled}   {by_run:<}")
    lines.append(noise_line(doc["real_run_spread"]))
    lines.append("per run (TTFT p50/p90, TBT p50/p90, ITL p50/p90 in ms):")
    for name, runs in doc["runs"].items():
        for r in runs:
            cells = "  ".join(
                f"{r[m]['p50']:.1f}/{r[m]['p90']:.1f}" for m in METRICS if r[m]["p50"] is not None
            )
            lines.append(
                f"  {name:<8} run {r['run']}: {cells}  ({r['completed']} completed; engine "
                f"waited {r.get('engine_cpu_wait_ms_per_s')} ms/s for a CPU)"
            )
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


def noise_line(spread: dict[str, float]) -> str:
    if not spread:
        return "real vLLM run-to-run spread: one run only"
    cells = ", ".join(f"{k} x{v:.2f}" for k, v in spread.items())
    return f"real vLLM run-to-run spread (max/min over its runs): {cells}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    p.add_argument("--num-requests", type=int, default=300)
    p.add_argument("--rate", type=float, default=4.0, help="req/s (trace re-timed)")
    p.add_argument("--prompt-scale", type=float, default=0.5)
    p.add_argument("--max-prompt", type=int, default=3072)
    p.add_argument("--max-output", type=int, default=512)
    p.add_argument("--runs", type=int, default=3, help="runs per engine, alternating")
    p.add_argument("--profile", default="cpu-tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cooldown", type=float, default=2.0, help="seconds between runs")
    p.add_argument("--kv-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--cpus", default="0", help="core for vLLM's compute and the emulator")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--boost", type=int, default=0, metavar="NICE", help="autogroup nice, e.g. -20")
    p.add_argument("--url", help="an already running vLLM (fcfs, as engines.sh starts it)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fidelity.json"))
    p.add_argument("--report", metavar="JSON", help="print the table of an earlier run; no runs")
    return p.parse_args(argv)


def _portable(value: Any) -> Any:
    """Paths relative to the repository, so a results file names no machine's directories."""
    if isinstance(value, Path):
        return os.path.relpath(value.resolve(), REPO)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(table(json.loads(Path(args.report).read_text())))
        return 0
    own_session_boost(args.boost)
    pin_client(args.client_cpus)
    items = workload(args)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    if args.url:
        sides = measure(args, RealVllm(args.url, 0), items)
    else:
        with real_vllm(f"fidelity-{os.getpid()}", args.kv_bytes, args.cpus, args.boost) as real:
            sides = measure(args, real, items)
    doc = {
        "started": started,
        "args": {k: _portable(v) for k, v in vars(args).items()},
        "loadavg_after": os.getloadavg(),
        "machine": platform.platform(),
        "goal": GOAL,
        "comparison": comparison(sides),
        "real_run_spread": run_spread(sides["real"]),
        "runs": {name: side.runs for name, side in sides.items()},
    }
    print(table(doc))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
