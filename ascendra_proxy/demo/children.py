"""Child processes of the demo: started together, always stopped together.

Theory of operation: :class:`Children` is a context manager that owns every process the demo
starts (emulated engines, the proxy).  :meth:`Children.start` runs a command in its *own*
process group (so a Ctrl-C at the terminal reaches only the demo, which then stops the
children in order instead of racing them), asks the kernel to SIGTERM the child should the
demo die without cleaning up (Linux ``PR_SET_PDEATHSIG``), and waits for the line a server
prints once it listens (``listening on URL``) to learn its URL.  Leaving the ``with`` block,
normally or through any exception, sends SIGTERM to each child's whole process group (the
last started first), waits a grace period, then SIGKILLs what is left; stop signals are held
back meanwhile.  :func:`stop_signals_as_ctrl_c` makes SIGTERM and SIGHUP act as Ctrl-C while
the demo runs, so ``finally`` blocks (and so this cleanup) run when the demo is terminated
too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import TextIO

__all__ = ["Child", "ChildError", "Children", "python_command", "stop_signals_as_ctrl_c"]

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 5.0


class ChildError(RuntimeError):
    """A child process failed to start."""


@dataclass
class Child:
    name: str
    url: str
    popen: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.popen.pid


def python_command(*args: str) -> list[str]:
    """``ascendra-proxy ARGS`` run by this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "ascendra_proxy.cli", *args]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _read_url(popen: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(popen.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and sel.select(timeout=left):
            line = popen.stdout.readline()
            if not line:
                break
            if marker in line:
                return line.split(marker, 1)[1].strip()
    raise ChildError(
        f"did not report {marker.strip()!r} within {timeout:g} s (exit {popen.poll()})"
    )


class Children:
    """Owns child processes; see the module docstring."""

    def __init__(
        self, log_dir: str | None = None, registry: list[tuple[str, int]] | None = None
    ) -> None:
        self._children: list[Child] = []
        self._log_dir = log_dir
        # (name, pid) of every child ever started (shared between scopes when given)
        self.started: list[tuple[str, int]] = [] if registry is None else registry

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, cmd: Sequence[str], *, marker: str = "listening on ", timeout: float = 60.0
    ) -> Child:
        """Start ``cmd`` and wait until it prints ``marker`` followed by its URL."""
        return self.start_all([(name, cmd)], marker=marker, timeout=timeout)[0]

    def start_all(
        self,
        commands: Sequence[tuple[str, Sequence[str]]],
        *,
        marker: str = "listening on ",
        timeout: float = 60.0,
    ) -> list[Child]:
        """Start every ``(name, cmd)`` at once, then wait for each one's URL."""
        spawned = [self._spawn(name, cmd) for name, cmd in commands]
        for child in spawned:
            try:
                child.url = _read_url(child.popen, marker, timeout)
            except ChildError as exc:
                raise ChildError(f"{child.name}: {exc}{self._log_hint(child.name)}") from None
        return spawned

    def _spawn(self, name: str, cmd: Sequence[str]) -> Child:
        stderr = self._stderr(name)
        try:
            popen = subprocess.Popen(
                list(cmd),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        finally:
            if stderr is not None:
                stderr.close()
        self.started.append((name, popen.pid))
        child = Child(name, "", popen)
        self._children.append(child)
        return child

    def stop_all(self) -> None:
        children, self._children = self._children, []
        _terminate(children[::-1])

    def _stderr(self, name: str) -> TextIO | None:
        if self._log_dir is None:
            return None
        os.makedirs(self._log_dir, exist_ok=True)
        return open(os.path.join(self._log_dir, f"{name}.log"), "w")

    def _log_hint(self, name: str) -> str:
        if self._log_dir is None:
            return ""
        return f" (see {os.path.join(self._log_dir, name + '.log')})"


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _terminate(children: Sequence[Child]) -> None:
    """SIGTERM every child's group, wait, SIGKILL the rest; always reaps and closes pipes.

    Stop signals are held back meanwhile (a second Ctrl-C must not cut the cleanup short);
    they are delivered, and raise, once every child is gone."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        _terminate_now(children)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _terminate_now(children: Sequence[Child]) -> None:
    for child in children:
        if child.popen.poll() is None:
            _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.popen.wait()
        _signal_group(child, signal.SIGKILL)  # anything the child left in its group
        if child.popen.stdout is not None:
            child.popen.stdout.close()


def _as_sigint(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)  # asyncio.Runner's while a loop runs
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals_as_ctrl_c() -> Iterator[None]:
    """SIGTERM/SIGHUP act as Ctrl-C inside the block (main thread only).

    They call the current SIGINT handler rather than raise: inside an event loop that is
    ``asyncio.Runner``'s, which cancels its main task cleanly, whereas an exception raised at
    an arbitrary point (say, in a protocol callback) can be swallowed.  A SIGINT that was
    ignored (a shell's background job) gets Python's default handler meanwhile, so that
    ``asyncio.Runner`` installs its own."""
    old = {s: signal.signal(s, _as_sigint) for s in (signal.SIGTERM, signal.SIGHUP)}
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
