"""Fixtures for the split-topology tests: a private redis-server on a free loopback port.

Without ``redis-server`` on PATH these tests skip with the reason, unless ``CI`` or
``ASCENDRA_REQUIRE_REDIS`` is set: then a missing server is a failure, so CI cannot pass by
skipping them (``make test`` installs Debian's ``redis-server``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_LIMIT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        reason = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI") or os.environ.get("ASCENDRA_REQUIRE_REDIS"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - closed below
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(workdir)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
