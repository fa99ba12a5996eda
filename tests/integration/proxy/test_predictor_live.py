"""The learned slack predictor in the live proxy, on emulated engines.

A round-robin proxy records training rows (a baseline has no predictor, the tap works
anyway); ``ascendra-proxy train`` reads them; an Ascendra proxy then answers with the
model trained on them, reports it on ``/metrics``, measures it against what happens,
picks up a replaced file, keeps the previous model when the replacement is corrupt, falls
back to the analytical model when the file is bad from the start, and retrains on its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from migration_helpers import ascendra_stack
from proxy_stack import MODEL, Stack, make_stack

from ascendra_proxy.cli import main
from ascendra_proxy.predictor.cli import write_atomic
from ascendra_proxy.predictor.model import read_model
from ascendra_proxy.predictor.rows import read_rows

# Prompt sizes spread so the queue builds and rows differ; short outputs keep it fast.
PROMPTS = [" ".join(["word"] * (20 + 90 * (i % 7))) for i in range(48)]
MAX_TOKENS = 12
HORIZON = 4


async def load(s: Stack, n: int = len(PROMPTS), concurrency: int = 24) -> None:
    """``n`` streaming completions, ``concurrency`` at a time; each must complete."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            stream = await s.client.completions.create(
                model=MODEL,
                prompt=PROMPTS[i % len(PROMPTS)],
                max_tokens=MAX_TOKENS,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            got = 0
            async for chunk in stream:
                got += sum(1 for c in chunk.choices if c.text)
            assert got > 0

    await asyncio.gather(*(one(i) for i in range(n)))


async def metric(s: Stack, name: str, **labels: str) -> float | None:
    """One sample of the proxy's /metrics, or None when absent."""
    async with aiohttp.ClientSession() as http, http.get(s.url + "/metrics") as r:
        text = await r.text()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    m = re.search(r"^" + pattern + "$", text, re.M)
    return float(m.group(1)) if m else None


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 60.0) -> None:
    """Poll ``check``; the bound only stops a hang (a loaded machine is slow, not wrong)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, (
            f"{check.__name__}: not in {within_s} s"
        )
        await asyncio.sleep(0.05)


def training(path: Path, **more: Any) -> dict[str, Any]:
    data = {"path": str(path), "flush_s": 0.1, "horizon_tokens": HORIZON, "min_interval_s": 0.05}
    return {"training_data": {**data, **more}}


async def record_rows(path: Path) -> dict[str, Any]:
    """Run load through a round-robin proxy recording rows; returns what it saw."""
    pred = training(path)
    async with make_stack(("v1", "v2"), policy={"type": "round_robin"}, predictor=pred) as s:
        await load(s)
        seen = {
            "source_learned": await metric(s, "ascendra_predictor_source", source="learned"),
            "source_analytical": await metric(s, "ascendra_predictor_source", source="analytical"),
            "labelled": await metric(s, "ascendra_predictor_training_rows_total", state="labelled"),
            "errors": await metric(s, "ascendra_predictor_error_seconds_count", target="ttft"),
        }
    return seen  # leaving the stack wrote the buffered rows


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """Rows from a live round-robin proxy, and a model trained on them by the CLI."""
    d = tmp_path_factory.mktemp("live")
    rows, model = d / "rows.jsonl", d / "model.json"
    seen = asyncio.run(record_rows(rows))
    args = ["train", "--data", str(rows), "--out", str(model), "--rounds", "5", "--holdout", "0"]
    assert main(args) == 0
    return rows, seen, model


def other_model(rows: Path, out: Path, quantile: str) -> Path:
    assert main(["train", "--data", str(rows), "--out", str(out), "--quantile", quantile]) == 0
    return out


def test_a_baseline_proxy_writes_rows_that_train_reads(
    recorded: tuple[Path, dict[str, Any], Path],
) -> None:
    rows, seen, model = recorded
    # round robin has no slack predictor: neither source is in use, no error measured
    assert seen["source_learned"] == 0 and seen["source_analytical"] == 0
    assert seen["errors"] is None
    assert seen["labelled"] is not None and seen["labelled"] > len(PROMPTS)
    lines = [orjson.loads(x) for x in rows.read_bytes().splitlines()]
    queries = {x["id"]: x for x in lines if x["k"] == "q"}
    labels = [x for x in lines if x["k"] == "l"]
    assert {x["b"]["name"] for x in queries.values()} == {"v1", "v2"}
    assert len({x["rid"] for x in queries.values()}) >= len(PROMPTS) // 2
    first_token = [lab for lab in labels if not queries[lab["id"]]["q"][5]]
    assert len(first_token) >= len(PROMPTS) // 2  # requests seen waiting, then labelled
    for lab in labels:
        assert 0 <= lab["ttft"] < 10
        assert lab["next_k"] is None or 0 < lab["next_k"] < 10
    assert any(lab["next_k"] is not None for lab in labels)  # 12 tokens > 1 + horizon 4
    parsed = read_rows([rows])
    assert len(parsed) == len(labels) and parsed.batch.horizon_tokens == HORIZON
    doc = orjson.loads(model.read_bytes())
    assert doc["format"] == "ascendra-slack-predictor" and doc["training"]["rows"] == len(labels)


async def test_ascendra_uses_the_learned_model_and_measures_it(
    recorded: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    _rows, _seen, model = recorded
    pred = {"model_path": str(model), **training(tmp_path / "more.jsonl")}
    async with ascendra_stack({"tick_ms": 20}, {}, predictor=pred) as s:
        assert await metric(s, "ascendra_predictor_source", source="learned") == 1
        assert await metric(s, "ascendra_predictor_source", source="analytical") == 0
        assert s.gateway.policy.predictor_source == "learned"  # type: ignore[attr-defined]
        await load(s, n=24, concurrency=12)

        async def measured() -> bool:
            n = await metric(s, "ascendra_predictor_error_seconds_count", target="ttft")
            return n is not None and n > 0

        await eventually(measured)
        ratio = await metric(s, "ascendra_predictor_abs_error_over_slo_count", target="ttft")
        assert ratio is not None and ratio > 0
        assert await metric(s, "ascendra_predictor_reloads_total") == 0  # loaded at start


async def test_a_replaced_model_file_is_picked_up_and_a_corrupt_one_ignored(
    recorded: tuple[Path, dict[str, Any], Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows, _seen, model = recorded
    live = tmp_path / "model.json"  # absent at start: analytical until a file appears
    pred = {"model_path": str(live), "reload_check_s": 0.1}
    caplog.set_level(logging.INFO, logger="ascendra_proxy.predictor.model")
    async with ascendra_stack({"tick_ms": 20}, {}, predictor=pred) as s:
        policy: Any = s.gateway.policy
        assert policy.predictor_source == "analytical"
        assert await metric(s, "ascendra_predictor_source", source="analytical") == 1
        shutil.copyfile(model, tmp_path / "staged.json")
        (tmp_path / "staged.json").replace(live)

        async def learned() -> bool:
            return await metric(s, "ascendra_predictor_source", source="learned") == 1

        await eventually(learned)
        first = s.gateway.learning.predictor.model  # type: ignore[union-attr]
        write_atomic(live, other_model(rows, tmp_path / "q5.json", "0.5").read_bytes())

        async def reloaded() -> bool:
            return await metric(s, "ascendra_predictor_reloads_total") == 2

        await eventually(reloaded)
        second = s.gateway.learning.predictor.model  # type: ignore[union-attr]
        assert second is not first and second is not None and second.quantile == 0.5
        write_atomic(live, b'{"format": "ascendra-slack-predictor", "format_')

        async def warned() -> bool:
            return "keeping the current one" in caplog.text

        await eventually(warned)
        assert s.gateway.learning.predictor.model is second  # type: ignore[union-attr]
        assert policy.predictor_source == "learned"
        await load(s, n=8, concurrency=8)  # still serving with the kept model


async def test_a_corrupt_model_at_start_falls_back_to_analytical_with_a_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "model.json"
    bad.write_bytes(b"not json at all")
    caplog.set_level(logging.WARNING, logger="ascendra_proxy.predictor.model")
    async with ascendra_stack({"tick_ms": 20}, {}, predictor={"model_path": str(bad)}) as s:
        assert await metric(s, "ascendra_predictor_source", source="analytical") == 1
        assert await metric(s, "ascendra_predictor_source", source="learned") == 0
        await load(s, n=8, concurrency=8)
    assert "using the analytical model" in caplog.text
    assert f"{bad}: not a ascendra-slack-predictor model file (not valid JSON)" in caplog.text


async def test_the_proxy_retrains_in_a_worker_and_loads_the_result(
    recorded: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    rows, _seen, _model = recorded
    data = tmp_path / "rows.jsonl"
    shutil.copyfile(rows, data)  # rows recorded before: enough to train at the first run
    out = tmp_path / "model.json"
    pred = {
        "model_path": str(out),
        "reload_check_s": 0.1,
        **training(data),
        "retrain": {"interval_s": 0.5, "min_rows": 20, "holdout": 0},
    }
    async with ascendra_stack({"tick_ms": 20}, {}, predictor=pred) as s:
        assert await metric(s, "ascendra_predictor_source", source="analytical") == 1

        async def learned() -> bool:
            return await metric(s, "ascendra_predictor_source", source="learned") == 1

        await eventually(learned, within_s=60)  # a spawned worker imports LightGBM first
        ok = await metric(s, "ascendra_predictor_retrains_total", outcome="ok")
        assert ok is not None and ok >= 1
        assert await metric(s, "ascendra_predictor_retrains_total", outcome="failed") == 0
        assert read_model(out).metadata["rows"] >= len(read_rows([rows]))  # trained on them
