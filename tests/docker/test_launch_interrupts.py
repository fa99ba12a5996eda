"""Unit tests of the launcher's interrupt guard (real signals to this process, no Docker)."""

from __future__ import annotations

import os
import signal

import pytest

from ascendra_proxy.launcher.interrupts import Interrupted, InterruptGuard, sigterm_ignored


def test_sigterm_raises_interrupted_while_installed_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    guard = InterruptGuard()
    with pytest.raises(Interrupted, match="SIGTERM"), guard.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_inside_held_is_raised_when_the_block_ends() -> None:
    guard = InterruptGuard()
    finished_block = False
    with pytest.raises(Interrupted, match="SIGINT"), guard.installed(), guard.held():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        finished_block = True
    assert finished_block


def test_held_without_a_signal_raises_nothing() -> None:
    guard = InterruptGuard()
    with guard.installed(), guard.held():
        pass


def test_sigterm_is_ignored_during_cleanup() -> None:
    with sigterm_ignored():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
