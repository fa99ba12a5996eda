"""Shared helpers for the engine-model tests."""

from __future__ import annotations

import pytest

from ascendra_proxy.engine import (
    EngineConfig,
    EngineModel,
    EngineRequest,
    LatencyProfile,
    SamplingSpec,
    StepResult,
    Tokenizer,
    load_profile,
)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer()


@pytest.fixture(scope="session")
def a100() -> LatencyProfile:
    return load_profile("a100-llama3-8b")


def make_engine(profile: LatencyProfile, tokenizer: Tokenizer, **cfg: object) -> EngineModel:
    return EngineModel(EngineConfig(**cfg), profile, seed=7, tokenizer=tokenizer)  # type: ignore[arg-type]


def request(
    rid: str,
    prompt: list[int],
    max_tokens: int = 16,
    arrival: float = 0.0,
    priority: int = 0,
    ignore_eos: bool = True,
    **sampling: object,
) -> EngineRequest:
    spec = SamplingSpec(max_tokens=max_tokens, ignore_eos=ignore_eos, **sampling)  # type: ignore[arg-type]
    return EngineRequest(rid, list(prompt), spec, arrival_time=arrival, priority=priority)


def prompt_ids(tokenizer: Tokenizer, n: int, seed: int = 0) -> list[int]:
    """Exactly ``n`` prompt tokens (BOS + n-1 words)."""
    return tokenizer.encode(tokenizer.make_text(n - 1, seed=seed))


def run_to_completion(
    engine: EngineModel, max_steps: int = 100_000
) -> tuple[dict[str, list[int]], list[StepResult]]:
    tokens: dict[str, list[int]] = {}
    results: list[StepResult] = []
    now = 0.0
    for _ in range(max_steps):
        if not engine.has_work():
            return tokens, results
        res = engine.step(now)
        now += res.duration_s
        results.append(res)
        for out in res.outputs:
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    raise AssertionError("engine did not drain")
