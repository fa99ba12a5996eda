"""The proxy's own errors are vLLM 0.32's for the same mistake: status, type, code, param and
message, as a real vLLM answered them (the real-vLLM suite checks the same side by side)."""

from __future__ import annotations

from typing import Any

import pytest
from fake_backend import FakeBackend
from proxy_rig import MODEL, RigFactory

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]

# (path, body, status, type, param, message) as vLLM 0.32 answers them (model "m" served)
VLLM_ANSWERS: list[tuple[str, dict[str, Any], int, str, str | None, str]] = [
    (
        CHAT,
        {"model": "nope", "messages": MSG},
        404,
        "NotFoundError",
        "model",
        f"The model `nope` does not exist. Valid aliases: {MODEL}.",
    ),
    (
        CHAT,
        {"model": MODEL, "messages": []},
        400,
        "BadRequestError",
        None,
        "Cannot apply chat template to an empty conversation. Provide at least one message.",
    ),
    (
        CHAT,
        {"model": MODEL, "messages": "hi"},
        400,
        "Bad Request",
        "body.messages",
        "1 validation error:\n  {'type': 'list_type', 'loc': 'body.messages', "
        "'msg': 'Input should be a valid list', 'input': 'hi'}",
    ),
    (
        CHAT,
        {"model": MODEL, "messages": MSG, "n": 0},
        400,
        "BadRequestError",
        None,
        "n must be at least 1, got 0.",
    ),
    (
        CHAT,
        {"model": MODEL, "messages": MSG, "max_tokens": -1},
        400,
        "BadRequestError",
        "max_tokens",
        "max_tokens must be at least 1, got -1. (parameter=max_tokens, value=-1)",
    ),
    (
        COMP,
        {"model": MODEL, "prompt": "hi", "max_tokens": 0},
        400,
        "BadRequestError",
        "max_tokens",
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
    ),
    (
        COMP,
        {"model": MODEL},
        400,
        "BadRequestError",
        "prompt",
        "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
    ),
    (
        COMP,
        {"model": MODEL, "prompt": "hi", "stream_options": {"include_usage": True}},
        400,
        "BadRequestError",
        "stream_options",
        "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "type_", "param", "message"), VLLM_ANSWERS)
async def test_errors_are_vllms(
    make_rig: RigFactory,
    path: str,
    body: dict[str, Any],
    status: int,
    type_: str,
    param: str | None,
    message: str,
) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.post(path, body)
        assert resp.status == status
        assert await resp.json() == {
            "error": {"message": message, "type": type_, "param": param, "code": status}
        }
        assert not r.fakes[0].bodies


@pytest.mark.parametrize("model", [None, ""])
async def test_missing_or_empty_model_is_the_served_one(
    make_rig: RigFactory, model: str | None
) -> None:
    body: dict[str, Any] = {"messages": MSG, "max_tokens": 2}
    if model is not None:
        body["model"] = model
    async with make_rig([FakeBackend("a")]) as r:
        resp = await r.post(CHAT, body)
        assert resp.status == 200
        assert (await resp.json())["model"] == MODEL
        assert r.fakes[0].bodies[0]["model"] == MODEL  # the engine is told the name


async def test_empty_model_with_several_served_is_refused(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a"), FakeBackend("b", model="other")]) as r:
        resp = await r.post(CHAT, {"model": "", "messages": MSG})
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["param"] == "model" and err["type"] == "BadRequestError"
