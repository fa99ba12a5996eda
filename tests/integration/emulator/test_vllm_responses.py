"""The emulator's ``/v1/responses``: vLLM's Responses object and event stream, read with the
openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from emu_helpers import FAST, oai

from ascendra_proxy.emulator.server import EmulatorConfig, RunningEmulator, run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with run_emulator(EmulatorConfig(time_scale=FAST, model="m")) as running:
        yield running


async def test_response_object(emu: RunningEmulator) -> None:
    client = oai(emu)
    out = await client.responses.create(model="m", input="hello", max_output_tokens=6)
    assert out.object == "response" and out.model == "m"
    assert out.usage is not None and 0 < out.usage.output_tokens <= 6
    assert out.usage.total_tokens == out.usage.input_tokens + out.usage.output_tokens
    if out.usage.output_tokens == 6:
        assert out.status == "incomplete"
        assert out.incomplete_details is not None
        assert out.incomplete_details.reason == "max_output_tokens"
    assert out.output_text
    await client.close()


async def test_response_stream_events(emu: RunningEmulator) -> None:
    client = oai(emu)
    stream = await client.responses.create(
        model="m",
        input=[{"role": "user", "content": "hi"}],
        instructions="be brief",
        max_output_tokens=8,
        stream=True,
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == deltas
    assert final.response.usage is not None and final.response.usage.output_tokens <= 8
    await client.close()


async def test_wrong_model_is_a_404(emu: RunningEmulator) -> None:
    client = oai(emu)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope", input="x", max_output_tokens=2)
    await client.close()
