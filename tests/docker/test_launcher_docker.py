"""``ascendra-proxy launch`` against the real Docker engine, emulators standing in for GPUs.

What is real: the launcher process and its code path end to end (config, plan, image check,
port check, container create/start with published ports and labels, health waits, the
proxy served in-process, SIGTERM handling, cleanup by run id) against the real Docker
engine; the containers run this project's image; the official ``openai`` client streams a
chat completion through the proxy to them; the GPU device requests are sent to the engine
and read back from it (``HostConfig.DeviceRequests``).

What is not: no GPU is allocated.  There is no NVIDIA runtime here, so a container that
carries device requests cannot start.  ``launch_recorder.py`` wraps the SDK client: each
create call is replayed first as a never-started probe with the device requests (to read
what the engine stored), then made for real without them.  The engines are the emulator
(``--emulate``), not vLLM/SGLang.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_helpers import free_port, stream_chat, unique

from ascendra_proxy.launcher.plan import LABEL_BACKEND, LABEL_GPUS, LABEL_MANAGED, LABEL_RUN

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 180


def write_config(path: Path, profile: str = "a100-llama3-8b") -> dict[str, int]:
    ports = {name: free_port() for name in ("proxy", "lp-0", "lp-1", "hp-0")}

    def backend(name: str, engine: str, gpus: list[int]) -> dict[str, Any]:
        return {
            "name": name,
            "url": f"http://127.0.0.1:{ports[name]}",
            "engine": engine,
            "model": "llama3-8b",
            "gpu_ids": gpus,
            "engine_settings": {"profile": profile, "scheduling_policy": "priority"},
        }

    cfg = {
        "listen": {"host": "127.0.0.1", "port": ports["proxy"]},
        "pools": [
            {
                "name": "lp",
                "role": "lp",
                "backends": [backend("lp-0", "vllm", [0]), backend("lp-1", "sglang", [1, 2])],
            },
            {"name": "hp", "role": "hp", "backends": [backend("hp-0", "vllm", [3])]},
        ],
    }
    path.write_text(yaml.safe_dump(cfg))
    return ports


def launcher_containers(client: Any, run_id: str) -> list[Any]:
    return list(
        client.containers.list(
            all=True, filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_RUN}={run_id}"]}
        )
    )


def remove_run(client: Any, run_id: str) -> None:
    for c in launcher_containers(client, run_id):
        c.remove(force=True)


def wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, _ = proc.communicate()
            pytest.fail(f"launcher exited with {proc.returncode}:\n{out[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail("launcher's proxy not ready in time")


@pytest.fixture
def run_id(docker_client: Any) -> Iterator[str]:
    rid = unique("t").replace("-", "")
    yield rid
    remove_run(docker_client, rid)  # safety net; the test asserts the launcher did it


def test_launch_starts_engines_on_their_gpus_serves_and_cleans_up(
    tmp_path: Path, docker_client: Any, test_image: str, run_id: str
) -> None:
    config = tmp_path / "launch.yaml"
    ports = write_config(config)
    record = tmp_path / "record.jsonl"
    argv = [sys.executable, str(HERE / "launch_recorder.py"), str(record), "--"]
    argv += ["launch", "--config", str(config), "--emulate", "--emulator-image", test_image]
    argv += ["--run-id", run_id, "--health-timeout", "120"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(proc, ports["proxy"])

        # The device requests: exactly each backend's GPUs, as sent and as the engine stored them.
        entries = {
            e["labels"][LABEL_BACKEND]: e for e in map(json.loads, record.read_text().splitlines())
        }
        expected_gpus = {"lp-0": ["0"], "lp-1": ["1", "2"], "hp-0": ["3"]}
        assert set(entries) == set(expected_gpus)
        for backend, gpus in expected_gpus.items():
            entry = entries[backend]
            want = {
                "Driver": "nvidia",
                "Count": 0,
                "DeviceIDs": gpus,
                "Capabilities": [["gpu"]],
                "Options": {},
            }
            assert entry["device_requests_sent"] == [want]
            [stored] = entry["device_requests_stored"]
            assert {k: stored[k] for k in ("Driver", "DeviceIDs", "Capabilities")} == {
                k: want[k] for k in ("Driver", "DeviceIDs", "Capabilities")
            }
            assert entry["labels"][LABEL_GPUS] == ",".join(gpus)
            assert entry["ports"] == {"8000/tcp": ["127.0.0.1", ports[backend]]}
            assert entry["command"][:3] == [
                "emulate",
                "--flavor",
                "sglang" if backend == "lp-1" else "vllm",
            ]

        # The running containers: one per backend, published where the config points.
        running = {c.labels[LABEL_BACKEND]: c for c in launcher_containers(docker_client, run_id)}
        assert set(running) == set(expected_gpus)
        for backend, c in running.items():
            assert c.status == "running"
            binding = c.attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]
            assert (binding["HostIp"], binding["HostPort"]) == ("127.0.0.1", str(ports[backend]))

        # A chat completion through the launcher's proxy.
        got = stream_chat(ports["proxy"], "hello", max_tokens=8)
        assert got.text.strip() and got.finish_reasons in (["length"], ["stop"])

        # SIGTERM: the proxy stops, the launcher removes exactly its containers, exit 0.
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out[-3000:]
        assert f"stopped and removed 3 container(s) of launch {run_id}" in out
        assert launcher_containers(docker_client, run_id) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ascendra_proxy.cli", "launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_engine_that_dies_fails_the_launch_with_its_log_and_is_removed(
    tmp_path: Path, docker_client: Any, test_image: str, run_id: str
) -> None:
    config = tmp_path / "launch.yaml"
    write_config(config, profile="no-such-profile")
    done = run_launch(
        "--config", str(config), "--emulate", "--emulator-image", test_image,
        "--no-gpu-requests", "--run-id", run_id, "--health-timeout", "60",
    )  # fmt: skip
    assert done.returncode == 1
    assert "stopped (exit code 2) before it became healthy; last log lines:" in done.stderr
    assert "no-such-profile" in done.stderr  # the emulator's own error, from its log
    assert launcher_containers(docker_client, run_id) == []


def test_missing_image_is_named_with_how_to_get_it(tmp_path: Path, docker_client: Any) -> None:
    config = tmp_path / "launch.yaml"
    write_config(config)
    image = f"ascendra-proxy:{unique('absent')}"
    done = run_launch("--config", str(config), "--emulate", "--emulator-image", image)
    assert done.returncode == 1
    assert "image not on this Docker host (the launcher does not pull)" in done.stderr
    assert f"{image}: build it from the repository root: docker build -t {image} ." in done.stderr
    done = run_launch("--config", str(config), "--image-vllm", image, "--image-sglang", image)
    assert f"docker pull {image}" in done.stderr


def test_sigterm_while_engines_start_removes_what_was_started(
    tmp_path: Path, docker_client: Any, test_image: str, run_id: str
) -> None:
    config = tmp_path / "launch.yaml"
    write_config(config)
    argv = [sys.executable, "-m", "ascendra_proxy.cli", "launch", "--config", str(config)]
    argv += ["--emulate", "--emulator-image", test_image, "--no-gpu-requests", "--run-id", run_id]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until the last container has been started
            seen.append(line)
            if line.startswith("launch: starting hp-0"):
                break
        assert seen and seen[-1].startswith("launch: starting hp-0"), "".join(seen)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, rest
        assert f"stopped and removed 3 container(s) of launch {run_id}" in rest
        assert launcher_containers(docker_client, run_id) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
