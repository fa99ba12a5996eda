"""Run the emulator as a child process (benchmarks, multi-process tests).

Theory of operation: :func:`emulator_process` starts ``python -m ascendra_proxy.cli emulate``
with ``--port 0`` (unless the caller passes ``--port``), optionally pinned to CPUs with
``taskset``, reads the ``listening on URL`` line the CLI prints, yields a handle, and on exit
sends SIGTERM (then SIGKILL after a grace period) to that one child::

    with emulator_process(["--flavor", "vllm", "--time-scale", "0.01"], cpus="0") as emu:
        requests.get(emu.url + "/health")
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

LISTENING = "listening on "


@dataclass
class EmulatorProcess:
    url: str
    popen: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.popen.pid


def _command(args: Sequence[str], cpus: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "ascendra_proxy.cli", "emulate", *args]
    if "--port" not in args:
        cmd += ["--port", "0"]
    if cpus is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise RuntimeError("taskset is not available to pin the emulator")
        cmd = [taskset, "-c", cpus, *cmd]
    return cmd


def _read_url(popen: subprocess.Popen[str], timeout: float) -> str:
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(popen.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = popen.stdout.readline()
            if not line:
                break
            if line.startswith(LISTENING):
                return line[len(LISTENING) :].strip()
    raise RuntimeError(f"emulator did not start within {timeout} s (exit code {popen.poll()})")


@contextlib.contextmanager
def emulator_process(
    args: Sequence[str], *, cpus: str | None = None, start_timeout: float = 30.0
) -> Iterator[EmulatorProcess]:
    """Start an emulator child process; see the module docstring."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(_command(args, cpus), stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = _read_url(popen, start_timeout)
        yield EmulatorProcess(url, popen)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()
