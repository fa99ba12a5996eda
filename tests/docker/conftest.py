"""Fixtures for the deployment tests: Docker engine, Compose v2, the project image, ports.

Tests marked ``docker`` need a Docker engine (and Compose v2 for the compose tests).  Where
none can run they skip with the reason, unless ``CI`` or ``ASCENDRA_REQUIRE_DOCKER`` is set:
then a missing engine is a failure, so CI cannot pass by skipping them.  On a machine
without a registry, ``../shared/tools/docker-local.sh`` sets up the engine, Compose v2 and a
local ``python:3.11-slim`` (see docs/deployment.md).

The image is built once per session through compose (BuildKit, shared layer cache) under
the tag ``ascendra-proxy:test`` so a test run never replaces a user's ``:local`` image.
Every compose project gets a unique name and every published port is a free one, so runs
in parallel (other engineers, CI shards) do not collide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from docker_helpers import COMPOSE_FILE, TEST_IMAGE, compose_env, require

BUILD_TIMEOUT_S = 900


def _compose_available() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "no docker CLI on PATH"
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return False, f"docker compose v2 is not installed: {probe.stderr.strip()[:200]}"
    return True, ""


@pytest.fixture(scope="session")
def compose() -> list[str]:
    """The compose command (needs only the CLI plugin, not a running engine)."""
    ok, reason = _compose_available()
    require(ok, reason)
    return ["docker", "compose", "-f", str(COMPOSE_FILE)]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A Docker SDK client on a reachable engine."""
    try:
        import docker
    except ImportError:
        require(False, "the docker Python package is not installed")
        raise
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        require(False, f"no Docker engine reachable: {exc}")
        raise
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def test_image(compose: list[str], docker_client: Any) -> str:
    """The project image, built from the working tree, tagged ascendra-proxy:test."""
    project = f"ascendra-build-{os.getpid()}"
    build = subprocess.run(
        [*compose, "-p", project, "build", "proxy"],
        env=compose_env(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert build.returncode == 0, (
        f"image build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    )
    docker_client.images.get(TEST_IMAGE)
    return TEST_IMAGE
