"""``ascendra-proxy demo``: the smoke run end to end, and that it never leaves a process behind.

The end-to-end tests run the real command as a subprocess (``--quick``: 40 requests per
policy, about 30 s) and look at what a user gets: the exit status, the files, the table.
The cleanup tests stop the demo mid-run with SIGINT, SIGTERM and SIGKILL and check that
every engine and proxy it started is gone.  The rest tests the pieces directly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ascendra_proxy.demo.children import ChildError, Children
from ascendra_proxy.demo.cpu import pick_time_scale, verdict
from ascendra_proxy.demo.load import counters_from_metrics, to_model_time
from ascendra_proxy.demo.stack import scaled_times
from loadgen.metrics import Outcome, RequestRecord

DEMO = [sys.executable, "-m", "ascendra_proxy.cli", "demo"]
QUICK_N = 40


def _running(pid: int, marker: bytes = b"") -> bool:
    """``pid`` runs (not a zombie) and its command line contains ``marker``."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def _ours_alive(pid: int) -> bool:
    return _running(pid, b"ascendra_proxy")


def _children_of(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ppid:
            out.append(int(entry.name))
    return out


def _wait_gone(pids: list[int], within_s: float = 15.0, marker: bytes = b"ascendra") -> list[int]:
    deadline = time.monotonic() + within_s
    alive = [p for p in pids if _running(p, marker)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _running(p, marker)]
    return alive


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quick_demo_runs_both_policies_on_the_same_load(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    t0 = time.monotonic()
    proc = subprocess.run(
        [*DEMO, "--quick", "--out", str(out)], capture_output=True, text=True, timeout=360
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("round_robin.json", "ascendra.json", "summary.json", "attainment.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("ttft_cdf.png", "tbt_cdf.png", "timeline-round_robin.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "timeline-ascendra.png").stat().st_size > 0  # every policy's timeline
    assert "Why requests missed their TTFT SLO" in proc.stdout
    assert "ascendra, slowest first tokens:" in proc.stdout

    docs = {p: json.loads((out / f"{p}.json").read_text()) for p in ("round_robin", "ascendra")}
    for policy, doc in docs.items():
        s = doc["summary"]
        assert (s["total"], s["completed"], s["failed"], s["unfinished"]) == (QUICK_N,) * 2 + (
            0,
            0,
        ), policy
        assert len(doc["requests"]) == QUICK_N
        assert all(r["tokens"] == r["output_tokens"] for r in doc["requests"]), policy
        assert doc["proxy"]["outcomes"].get("completed") == QUICK_N, doc["proxy"]
        assert doc["config"]["slo_ttft_s"] == 1.0 and doc["config"]["seed"] == 0
        assert doc["tails"]["joined"] == QUICK_N, policy  # the proxy logged every request
        assert all(r["route"] for r in doc["requests"]), policy
    # the same requests, at the same times, went to both
    shape = {
        p: [(r["arrival_s"], r["prompt_tokens"], r["output_tokens"]) for r in d["requests"]]
        for p, d in docs.items()
    }
    assert shape["round_robin"] == shape["ascendra"]

    ascendra_cfg = yaml.safe_load((out / "configs" / "proxy-ascendra.yaml").read_text())
    assert [(p["role"], len(p["backends"])) for p in ascendra_cfg["pools"]] == [
        ("lp", 2),
        ("hp", 1),
    ]
    rr_cfg = yaml.safe_load((out / "configs" / "proxy-round_robin.yaml").read_text())
    assert [(p["role"], len(p["backends"])) for p in rr_cfg["pools"]] == [("mixed", 3)]

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"round_robin", "ascendra"}
    assert 0 < summary["runtime_s"] < time.monotonic() - t0
    assert f"demo wall time {summary['runtime_s']:.0f} s" in proc.stdout
    pids = [p["pid"] for p in summary["processes"]]
    assert len(pids) == 8  # 3 engines + 1 proxy per policy
    assert _wait_gone(pids, within_s=0) == []

    report = proc.stdout
    assert "SLO attainment (TTFT and TBT)" in report and "offloads LP -> HP" in report
    assert "40 requests, seed 0" in report and "36 req/s" in report


STOPS = {
    "SIGINT": [signal.SIGINT],
    "SIGTERM": [signal.SIGTERM],
    "SIGKILL": [signal.SIGKILL],
    "SIGINT-twice": [signal.SIGINT, signal.SIGINT],  # the second one lands in the cleanup
}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("stop", list(STOPS))
def test_stopping_the_demo_mid_run_stops_every_child(tmp_path: Path, stop: str) -> None:
    cmd = [*DEMO, "--quick", "--num-requests", "150", "--out", str(tmp_path / "demo")]
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # the load starts once the proxy is ready
            if line.startswith("[round_robin] proxy http://"):
                break
        else:
            pytest.fail(
                f"demo ended early: {demo.wait()} {demo.stderr.read() if demo.stderr else ''}"
            )
        time.sleep(1.0)  # requests in flight
        children = [p for p in _children_of(demo.pid) if _ours_alive(p)]
        assert len(children) == 4, children  # 3 engines + the proxy
        for sig in STOPS[stop]:
            demo.send_signal(sig)
            time.sleep(0.2)
        _, err = demo.communicate(timeout=60)  # drains the pipes: a full one would block it
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    if stop == "SIGKILL":
        assert demo.returncode == -signal.SIGKILL
    else:
        assert demo.returncode in (130, -signal.SIGINT), err[-3000:]
        assert "interrupted: every process the demo started has been stopped" in err
    assert _wait_gone(children) == [], err[-3000:]


def test_bad_options_start_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*DEMO, "--policies", "round_robin,fastest", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown policy 'fastest' (known: ascendra," in proc.stderr
    assert not (tmp_path / "demo").exists()


STUB = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print('listening on http://127.0.0.1:1', flush=True)\n"
    "time.sleep(60)\n"
)


def test_children_are_stopped_with_their_own_children_on_error() -> None:
    registry: list[tuple[str, int]] = []
    with pytest.raises(RuntimeError, match="boom"), Children(registry=registry) as kids:
        child = kids.start("stub", [sys.executable, "-c", STUB])
        assert child.url == "http://127.0.0.1:1"
        deadline = time.monotonic() + 10
        while not (grandchildren := _children_of(child.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grandchildren
        raise RuntimeError("boom")
    assert registry == [("stub", child.pid)]
    assert child.popen.poll() is not None
    assert _wait_gone(grandchildren, within_s=5, marker=b"time.sleep") == []  # same group


def test_a_child_that_never_listens_is_an_error_and_is_stopped() -> None:
    with Children() as kids, pytest.raises(ChildError, match="did not report"):
        kids.start("mute", [sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    [(_, pid)] = kids.started
    assert _wait_gone([pid], within_s=0, marker=b"") == []


METRICS = """\
# HELP ascendra_decisions_total Policy decisions by reason
# TYPE ascendra_decisions_total counter
ascendra_decisions_total{reason="offload_ttft"} 7.0
ascendra_decisions_total{reason="offload_backend_down"} 1.0
ascendra_decisions_total{reason="migrate_tbt"} 2.0
ascendra_decisions_total{reason="migrate_unsupported"} 5.0
ascendra_decisions_total{reason="lp_room"} 90.0
# HELP ascendra_requests_total Finished requests by outcome
# TYPE ascendra_requests_total counter
ascendra_requests_total{model="m",outcome="completed"} 98.0
ascendra_requests_total{model="m",outcome="backend_failed"} 2.0
# HELP ascendra_retries_total x
# TYPE ascendra_retries_total counter
ascendra_retries_total{backend="lp-0"} 3.0
"""


def test_counters_from_the_proxy_metrics() -> None:
    c = counters_from_metrics(METRICS)
    assert (c["offloads"], c["migrations"], c["migrations_refused"]) == (8, 2, 5)
    assert c["outcomes"] == {"completed": 98, "backend_failed": 2}
    assert c["retries"] == 3 and c["decisions"]["lp_room"] == 90


def test_model_time_divides_every_time_and_keeps_attainment() -> None:
    r = RequestRecord(
        0, arrival_s=2.0, prompt_tokens=10, output_tokens=3, slo_ttft_s=8.0, slo_tbt_s=1.2
    )
    r.sent_s, r.end_s, r.outcome = 2.0, 6.0, Outcome.COMPLETED
    for t in (3.0, 4.0, 5.0):
        r.add_chunk(t, 1)
    m = to_model_time(r, 8.0)
    assert (m.arrival_s, m.end_s, m.slo_ttft_s, m.slo_tbt_s) == (0.25, 0.75, 1.0, 0.15)
    assert m.ttft_s == pytest.approx(0.125) and m.tbt_mean_s == pytest.approx(0.125)
    assert r.chunk_times == [3.0, 4.0, 5.0]  # the original is untouched


def test_time_scale_grows_with_the_cpu_the_machine_lacks() -> None:
    tokens_per_s = 7500.0  # the default load: ~0.75 cores of work at scale 1
    assert pick_time_scale(tokens_per_s, idle=2.0)[0] == 3.0
    assert pick_time_scale(tokens_per_s, idle=0.4)[0] == 4.0
    scale, why = pick_time_scale(tokens_per_s, idle=0.05)
    assert scale == 6.0 and "busy" in why
    assert pick_time_scale(tokens_per_s, idle=None)[0] == 6.0


def test_every_time_the_proxy_is_given_scales_with_the_gpu() -> None:
    params = {
        "tick_ms": 20.0,
        "lp_queue_steps": 2.0,
        "roles": "static",
        "offload": {"margin_s": 0.7, "infeasible": False, "margin_max_frac": 0.3},
        "adaptive": {"grow_offload_rate": 1.0, "min_lp": 1},
    }
    assert scaled_times(params, 4.0) == {
        "tick_ms": 80.0,
        "offload": {"margin_s": 2.8},
        "adaptive": {"grow_offload_rate": 0.25},
    }
    assert scaled_times(params, 1.0) == {}


def test_verdict_flags_a_starved_second_in_model_time() -> None:
    calm = {"run_queue_wait_per_slice_s": {"engine-0": 0.002, "proxy": 0.001}}
    assert verdict(calm, send_lag_p99_s=0.01, scale=4.0) is None
    starved = {**calm, "worst_interval_wait_per_slice_s": {"engine-0": 0.2, "proxy": 0.01}}
    text = verdict(starved, send_lag_p99_s=0.01, scale=4.0)
    assert text is not None and "engine-0 waited 50.0 ms" in text
    assert "late" in (verdict(calm, send_lag_p99_s=1.0, scale=4.0) or "")
