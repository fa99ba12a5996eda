"""The load generator end to end against a fake streaming server (fast, deterministic)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from lg_fake_server import FakeConfig, serve, serve_in_thread, toy_chat_count, toy_count

from loadgen.arrivals import ArrivalSpec
from loadgen.cli import main
from loadgen.client import Target, base_url, make_session
from loadgen.lengths import Fixed, Uniform
from loadgen.metrics import Outcome, summarize
from loadgen.runner import RunOptions, RunResult, make_counter, measure
from loadgen.workloads import DisconnectSpec, SloClass, WorkItem, WorkloadSpec, build_workload

QUIET = RunOptions(progress=False, request_timeout_s=30.0)


def items(n: int = 12, rate: float = 100.0, **kw: object) -> list[WorkItem]:
    spec = WorkloadSpec(
        num_requests=n,
        arrivals=ArrivalSpec("poisson", rate),
        slo_classes=(SloClass(1.0, 0.1),),
        prompt_len=Uniform(20, 300),
        output_len=Fixed(8),
        seed=3,
    )
    return build_workload(replace(spec, **kw))  # type: ignore[arg-type]


async def run(
    url: str,
    work: list[WorkItem],
    *,
    endpoint: str = "completions",
    stop: asyncio.Event | None = None,
    options: RunOptions = QUIET,
) -> RunResult:
    async with make_session() as session:
        target = Target(base_url(url + "/v1"), "fake-model", endpoint)
        counter = await make_counter(session, target, None, None)
        return await measure(session, target, work, counter, options, prompt_seed="t", stop=stop)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_run_measures_exact_tokens_ttft_and_prompt_lengths(endpoint: str) -> None:
    async with serve(FakeConfig(ttft_s=0.03, tbt_s=0.004, per_chunk=3)) as (url, state):
        result = await run(url, items(), endpoint=endpoint)
    s = summarize(result.records, result.duration_s)
    assert (s["completed"], s["failed"], s["total"]) == (12, 0, 12)
    assert all(r.tokens == 8 for r in result.records)  # 3+3+2 tokens in 3 chunks
    assert all(r.chunk_tokens == [3, 3, 2] for r in result.records)
    assert 0.03 <= s["ttft_p50"] < 1.0  # the server waits 30 ms; a busy machine adds some
    # the server's own usage.prompt_tokens is within one token of every target
    assert all(r.prompt_tokens_reported is not None for r in result.records)
    assert s["prompt_tokens_max_error"] <= 1
    targets = sorted(x.prompt_tokens for x in items())
    counted = sorted(
        toy_chat_count(b["messages"]) if endpoint == "chat" else toy_count(b["prompt"])
        for b in state.bodies
    )
    assert all(abs(a - b) <= 1 for a, b in zip(targets, counted, strict=True))
    assert all(
        b["ignore_eos"] is True and b["max_tokens"] == b["min_tokens"] == 8 for b in state.bodies
    )
    assert all(h["x-slo-ttft-ms"] == "1000" and h["x-slo-tpot-ms"] == "100" for h in state.headers)
    assert s["slo_attainment"] == 1.0


async def test_disconnecting_clients_close_their_streams() -> None:
    # SLOs no loaded machine misses (60 s, 10 s): attainment 1.0 then shows only that the
    # disconnected requests are left out (counted as misses it would be 0.5)
    slo = (SloClass(60.0, 10.0),)
    work = items(10, disconnect=DisconnectSpec(0.5, 0.05), slo_classes=slo)
    async with serve(FakeConfig(ttft_s=0.01, tbt_s=0.05)) as (url, state):
        result = await run(url, work)
        deadline = asyncio.get_running_loop().time() + 30
        while state.disconnects < 5:  # the server notices hang-ups on its next write
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        aborted = state.disconnects
    outcomes = [r.outcome for r in result.records]
    assert outcomes.count(Outcome.DISCONNECTED) == 5
    assert outcomes.count(Outcome.COMPLETED) == 5
    assert aborted == 5
    assert summarize(result.records)["slo_attainment"] == 1.0  # left out of the denominator


async def test_failures_count_as_misses() -> None:
    async with serve(FakeConfig(fail_every=4)) as (url, _state):
        result = await run(url, items(12))
    s = summarize(result.records)
    assert s["failed"] == 3
    assert s["slo_attainment"] == pytest.approx(9 / 12)
    assert all("injected failure" in (r.error or "") for r in result.records if r.error)


async def test_fallback_counting_without_usage() -> None:
    async with serve(FakeConfig(usage=False)) as (url, _state):
        result = await run(url, items(4))
    assert [r.tokens for r in result.records] == [8] * 4
    assert result.stats.fallback_counting == 4
    assert all(r.prompt_tokens_reported is None for r in result.records)


async def test_stop_keeps_what_was_measured() -> None:
    work = items(40, rate=20.0)  # ~2 s of arrivals
    stop = asyncio.Event()  # what Ctrl-C sets
    async with serve(FakeConfig(ttft_s=0.01, tbt_s=0.05)) as (url, state):
        state.set_after(15, stop)  # well into the run: some requests done, some streaming
        result = await run(url, work, stop=stop)
    assert result.interrupted
    assert 15 <= len(result.records) < 40 and result.not_sent == 40 - len(result.records)
    s = summarize(result.records, result.duration_s)
    assert s["unfinished"] >= 1 and s["completed"] >= 1
    assert any(r.tokens > 0 for r in result.records if r.outcome is Outcome.UNFINISHED)


async def test_missing_tokenize_is_a_clear_error() -> None:
    async with serve(FakeConfig(tokenize=False)) as (url, _state), make_session() as session:
        target = Target(base_url(url), "fake-model")
        with pytest.raises(SystemExit, match="no usable /tokenize"):
            await make_counter(session, target, None, None)
        async with serve() as (other, _):
            counter = await make_counter(session, target, None, other + "/tokenize")
            assert await counter.count("a b") == 3


def test_cli_run_sweep_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with serve_in_thread(FakeConfig(ttft_s=0.01, tbt_s=0.002)) as (url, state):
        common = ["--url", url + "/v1", "--no-progress", "--workload", "fixed"]
        common += ["--prompt-len", "64", "--output-len", "6", "--slo-ttft", "0.5"]
        common += ["--slo-tbt", "0.05", "--num-requests", "15"]
        assert main(["run", *common, "--rate", "50", "--out", str(out)]) == 0
        sweep = tmp_path / "sweep.json"
        assert (
            main(["sweep", *common, "--rates", "20,60", "--cooldown", "0", "--out", str(sweep)])
            == 0
        )
        models_seen = {b["model"] for b in state.bodies}
    doc = orjson.loads(out.read_bytes())
    s = doc["summary"]
    keys = "slo_attainment goodput_rps throughput_tok_s ttft_p50 ttft_p99 tbt_mean_p50 itl_p99"
    keys += " tpot_p50 e2e_p90 completed failed disconnected total request_throughput"
    assert all(s[k] is not None for k in keys.split())
    assert s["completed"] == 15 and s["slo_attainment"] == 1.0 and s["prompt_tokens_max_error"] == 0
    assert doc["config"]["model"] == "fake-model" == models_seen.pop()
    # every token is in the file once: the first chunk's, then one count per gap (a loaded
    # machine may read two of the server's 2 ms-apart chunks at once: then fewer gaps)
    assert len(doc["requests"]) == 15
    for r in doc["requests"]:
        assert r["first_chunk_tokens"] + sum(r["gap_tokens"]) == r["tokens"] == 6, r
        assert len(r["gaps_s"]) == len(r["gap_tokens"]) and all(n >= 1 for n in r["gap_tokens"])
    sw = orjson.loads(sweep.read_bytes())
    assert [p["rate"] for p in sw["points"]] == [20.0, 60.0]
    assert sw["capacity_status"] == "above_range" and sw["capacity_bound"] == 60.0
    pngs = tmp_path / "png"
    assert main(["plot", str(out), str(sweep), "--out", str(pngs)]) == 0
    names = sorted(p.name for p in pngs.iterdir())
    assert names == ["attainment_vs_rate.png", "tbt_cdf.png", "timeline.png", "ttft_cdf.png"]
    assert all((pngs / n).stat().st_size > 10_000 for n in names)


def test_cli_rejects_bad_options_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,1\n1,x,1\n")
    args = ["run", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "o.json")]
    assert main([*args, "--trace", str(bad), "--slo-ttft", "1", "--slo-tbt", "0.1"]) == 2
    assert "bad.csv:3: column 'num_prefill_tokens'" in capsys.readouterr().err
    assert main([*args, "--workload", "azure-conv", "--num-requests", "5", "--rate", "1"]) == 2
    assert "--slo-ttft" in capsys.readouterr().err


async def test_stop_while_building_prompts_sends_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    async with serve() as (url, state):
        result = await run(url, items(50), stop=stop)
    assert result.interrupted and result.records == [] and result.not_sent == 50
    assert state.requests == 0
