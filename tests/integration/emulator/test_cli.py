"""The ``ascendra-proxy emulate`` command as a child process."""

from __future__ import annotations

import subprocess
import sys

import httpx

from ascendra_proxy.emulator.process import emulator_process
from ascendra_proxy.engine import load_profile


def test_cli_serves_sglang_with_a_start_fault_and_stops_on_sigterm() -> None:
    args = [
        "--flavor",
        "sglang",
        "--profile",
        "cpu-tiny",
        "--time-scale",
        "0",
        "--fault",
        "error-rate=1",
        "--fault",
        "error-status=502",
        "--model",
        "tiny",
    ]
    with emulator_process(args) as emu:
        assert emu.url.startswith("http://127.0.0.1:")
        assert httpx.get(emu.url + "/health").status_code == 200
        info = httpx.get(emu.url + "/get_server_info").json()
        capacity = load_profile("cpu-tiny").kv_capacity_tokens  # the profile's KV, in tokens
        assert info["max_total_num_tokens"] == capacity and info["served_model_name"] == "tiny"
        resp = httpx.post(emu.url + "/generate", json={"text": "the"})
        assert resp.status_code == 502
        httpx.post(emu.url + "/emulator/faults", json={})
        resp = httpx.post(
            emu.url + "/generate", json={"text": "the", "sampling_params": {"max_new_tokens": 3}}
        )
        assert resp.status_code == 200
        body = {"text": "the", "stream": True, "sampling_params": {"max_new_tokens": 4}}
        with httpx.stream("POST", emu.url + "/generate", json=body) as streamed:
            events = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        assert len(events) == 5 and events[-1] == "data: [DONE]"  # served by uvloop here
        popen = emu.popen
    assert popen.returncode == 0


def test_cli_rejects_a_bad_fault_spec() -> None:
    cmd = [sys.executable, "-m", "ascendra_proxy.cli", "emulate", "--fault", "explode=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown fault kind" in done.stderr
