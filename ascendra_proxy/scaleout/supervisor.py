"""``serve --workers N``: N stream worker processes on one port, and their scheduler.

Theory of operation.  The supervisor is a plain parent process (no event loop): it starts
one scheduler on a Unix socket in a private temporary directory (unless ``--scheduler``
names remote ones), then N workers running ``serve --scheduler ...`` with ``SO_REUSEPORT``
on the same host and port, so the kernel spreads new client connections over them.  Worker
``i`` also listens on ``worker_port_base + i`` when that is set: that private port serves
the worker's own ``/metrics`` (and everything else), one scrape target per process.

A child that exits while the supervisor runs is started again (a crashed worker loses only
its own streams; its siblings keep serving).  SIGINT/SIGTERM are passed to every child and
the supervisor waits for them to finish their streams.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["Supervisor", "free_port"]

log = logging.getLogger(__name__)

POLL_S = 0.2
START_WAIT_S = 30.0
STOP_WAIT_S = 15.0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Supervisor:
    config: str
    host: str
    port: int
    workers: int
    schedulers: tuple[str, ...] = ()
    worker_port_base: int | None = None
    log_level: str = "INFO"
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stop: bool = False

    def _cmd(self, *args: str) -> list[str]:
        base = [sys.executable, "-m", "ascendra_proxy.cli"]
        return [*base, *args, "--config", self.config, "--log-level", self.log_level]

    def _worker_cmd(self, i: int, schedulers: tuple[str, ...]) -> list[str]:
        cmd = self._cmd("serve", "--host", self.host, "--port", str(self.port), "--reuse-port")
        for s in schedulers:
            cmd += ["--scheduler", s]
        if self.worker_port_base is not None:
            cmd += ["--private-port", str(self.worker_port_base + i)]
        return cmd

    def run(self) -> int:
        if self.port == 0:
            self.port = free_port(self.host)
        tmp = tempfile.mkdtemp(prefix="ascendra-scheduler-")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            schedulers = self.schedulers
            commands: dict[str, list[str]] = {}
            if not schedulers:
                sock = os.path.join(tmp, "scheduler.sock")
                commands["scheduler"] = self._cmd("scheduler", "--listen", f"unix:{sock}")
                self._start("scheduler", commands["scheduler"])
                if not _wait_for(sock, START_WAIT_S):
                    log.error("the scheduler did not start")
                    return 1
                schedulers = (f"unix:{sock}",)
            for i in range(self.workers):
                commands[f"worker-{i}"] = self._worker_cmd(i, schedulers)
                self._start(f"worker-{i}", commands[f"worker-{i}"])
            print(
                f"ascendra-proxy: {self.workers} workers on http://{self.host}:{self.port}",
                flush=True,
            )
            self._watch(commands)
        finally:
            self._stop_all()
            shutil.rmtree(tmp, ignore_errors=True)
        return 0

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self._stop = True

    def _start(self, name: str, cmd: list[str]) -> None:
        self.children[name] = subprocess.Popen(cmd)

    def _watch(self, commands: dict[str, list[str]]) -> None:
        while not self._stop:
            time.sleep(POLL_S)
            for name, proc in list(self.children.items()):
                if proc.poll() is not None and not self._stop:
                    log.warning("%s exited with %s; starting it again", name, proc.returncode)
                    self._start(name, commands[name])

    def _stop_all(self) -> None:
        workers = [p for n, p in self.children.items() if n != "scheduler"]
        last = [p for n, p in self.children.items() if n == "scheduler"]
        for group in (workers, last):  # workers first: they finish streams, then the brain
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT_S
            for proc in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _wait_for(path: str, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False
