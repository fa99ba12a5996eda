"""Helpers of the deployment tests (imported by conftest and the tests)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
TEST_IMAGE = "ascendra-proxy:test"


def require(ok: bool, reason: str) -> None:
    """Skip with ``reason`` unless CI demands Docker, then fail with it."""
    if ok:
        return
    if os.environ.get("CI") or os.environ.get("ASCENDRA_REQUIRE_DOCKER"):
        pytest.fail(f"{reason} (CI/ASCENDRA_REQUIRE_DOCKER is set: Docker tests must run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCENDRA_")}
    env.update(COMPOSE_BAKE="false", ASCENDRA_IMAGE=TEST_IMAGE, **extra)
    return env


def unique(prefix: str) -> str:
    """A name no concurrent test run uses (compose projects, run ids)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Streamed:
    text: str
    finish_reasons: list[str]
    usage: Any  # openai CompletionUsage of the final chunk, or None


def stream_chat(port: int, content: str, max_tokens: int) -> Streamed:
    """Stream one chat completion through the proxy on ``port`` with the official client."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="llama3-8b",
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    text: list[str] = []
    finish: list[str] = []
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            if choice.finish_reason:
                finish.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    return Streamed("".join(text), finish, usage)
