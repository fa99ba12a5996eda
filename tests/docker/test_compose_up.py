"""`docker compose up` of the default profile, for real, then the demo profile's load run.

Real: the image is built from the working tree, the engine runs four containers (three
emulated vLLM engines and the proxy) on a compose bridge network, the proxy's port is
published on 127.0.0.1, ``up --wait`` returns only when every healthcheck passes, and the
official ``openai`` client streams a chat completion through the published port.  Stand-in:
the engines are this project's emulator (A100 / Llama-3-8B latency profile), not vLLM on a
GPU; on a machine without a registry the ``python:3.11-slim`` base is a Debian-built
stand-in (docs/deployment.md).  The stack is torn down with ``down -v`` whatever happens.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from docker_helpers import REPO, compose_env, free_port, stream_chat, unique

pytestmark = [pytest.mark.docker, pytest.mark.slow]

UP_TIMEOUT_S = 300
METRIC = re.compile(r"ascendra_[a-z_]+")


@dataclass(frozen=True)
class Stack:
    compose: list[str]  # compose command with -p PROJECT
    env: dict[str, str]
    port: int
    up_seconds: float

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def stack(compose: list[str], test_image: str) -> Iterator[Stack]:
    port = free_port()
    project = unique("ascendra-test")
    env = compose_env(ASCENDRA_PORT=str(port), ASCENDRA_DEMO_REQUESTS="8", ASCENDRA_DEMO_RATE="8")
    s = Stack([*compose, "-p", project], env, port, 0.0)
    start = time.monotonic()
    try:
        up = s.run("up", "-d", "--wait", "--no-build", timeout=UP_TIMEOUT_S)
        if up.returncode != 0:
            logs = s.run("logs", "--no-color", "--tail", "40").stdout
            pytest.fail(f"compose up failed:\n{up.stderr[-3000:]}\n{logs[-4000:]}")
        yield Stack(s.compose, env, port, time.monotonic() - start)
    finally:
        s.run("--profile", "demo", "down", "-v", "--remove-orphans", "--timeout", "5")


def test_up_wait_brings_every_service_up_healthy(stack: Stack, docker_client: Any) -> None:
    print(f"compose up --wait took {stack.up_seconds:.1f} s")
    project = stack.compose[-1]
    containers = docker_client.containers.list(
        filters={"label": f"com.docker.compose.project={project}"}
    )
    states = {
        c.labels["com.docker.compose.service"]: c.attrs["State"]["Health"]["Status"]
        for c in containers
    }
    assert states == dict.fromkeys(["engine-lp0", "engine-lp1", "engine-hp0", "proxy"], "healthy")
    for c in containers:
        assert c.attrs["Config"]["User"] == "ascendra"  # non-root
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/ready", timeout=5) as resp:
        assert resp.status == 200


def test_openai_client_streams_a_chat_completion_through_the_proxy(stack: Stack) -> None:
    got = stream_chat(stack.port, "Say hello from the compose stack.", max_tokens=12)
    assert got.text.strip()
    assert got.finish_reasons in (["length"], ["stop"])
    assert got.usage is not None and got.usage.prompt_tokens > 0
    assert 1 <= got.usage.completion_tokens <= 12
    if got.finish_reasons == ["length"]:
        assert got.usage.completion_tokens == 12
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'ascendra_requests_total{model="llama3-8b",outcome="completed"}' in metrics


def test_status_works_against_the_stack_with_the_testbed_admin_key(stack: Stack) -> None:
    """The README's two ways: inside the proxy container (the key is in its environment)
    and from the host with the documented default key."""
    inside = stack.run("exec", "-T", "proxy", "ascendra-proxy", "status", timeout=60)
    assert inside.returncode == 0, inside.stderr[-2000:]
    assert "lp-0" in inside.stdout and "hp-0" in inside.stdout
    url = f"http://127.0.0.1:{stack.port}"
    env = {**stack.env, "ASCENDRA_ADMIN_KEY": "ascendra-testbed-admin"}
    argv = [sys.executable, "-m", "ascendra_proxy.cli", "status", "--url", url]
    host = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert host.returncode == 0, host.stderr[-2000:]
    assert "lp-1" in host.stdout
    env["ASCENDRA_ADMIN_KEY"] = "wrong"
    denied = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "--admin-key" in denied.stderr


def test_demo_profile_runs_a_load_and_prints_the_report(stack: Stack) -> None:
    demo = stack.run("--profile", "demo", "run", "--rm", "--no-deps", "loadgen", timeout=180)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "requests 8: completed 8, failed 0" in demo.stdout, demo.stdout
    assert "SLO attainment" in demo.stdout


def test_grafana_dashboard_queries_only_metrics_the_proxy_exports(stack: Stack) -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "ascendra.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in METRIC.findall(e)}
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/metrics", timeout=5) as resp:
        exposition = resp.read().decode()
    exported: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith(("# HELP", "# TYPE")):
            exported.add(line.split()[2])
        elif match := METRIC.match(line):
            exported.add(match.group(0))
    assert len(used) >= 10
    assert used <= exported, sorted(used - exported)


@pytest.mark.parametrize("profile", ["gpu", "sglang"])
def test_real_engine_proxy_serves_the_served_model_name_from_the_environment(
    compose: list[str], docker_client: Any, test_image: str, profile: str
) -> None:
    """The real-engine proxies' start command, run for real (engines absent: not needed
    to see which config the proxy loaded and which model name it routes)."""
    done = subprocess.run(
        [*compose, "--profile", profile, "config", "--format", "json"],
        env=compose_env(ASCENDRA_SERVED_MODEL_NAME="served-x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    service = json.loads(done.stdout)["services"][f"proxy-{profile}"]
    [mount] = service["volumes"]
    port = free_port()
    container = docker_client.containers.run(
        test_image,
        service["command"],
        entrypoint=service["entrypoint"],
        environment=service["environment"],
        volumes={mount["source"]: {"bind": mount["target"], "mode": "ro"}},
        ports={"8000/tcp": ("127.0.0.1", port)},
        name=unique(f"ascendra-proxy-{profile}"),
        detach=True,
    )
    try:
        body = _get_json(f"http://127.0.0.1:{port}/v1/models", timeout_s=30)
        assert [m["id"] for m in body["data"]] == ["served-x"]
    finally:
        container.remove(force=True)


def _get_json(url: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
