"""Exact-length prompts with local counters whose words cost one or several tokens."""

from __future__ import annotations

import sys
import types

import pytest

from loadgen.prompts import WORDS, LocalCounter, PromptBuilder, hf_counter
from loadgen.workloads import WorkItem


def item(index: int, tokens: int, group: int | None = None, prefix: int = 0) -> WorkItem:
    return WorkItem(index, 0.0, tokens, 8, 1.0, 0.1, group, None, prefix)


def bpe_like(text: str) -> int:
    """BOS + one token per word, words longer than 4 letters cost 2, 'people' costs 3."""
    return 1 + sum(3 if w == "people" else 2 if len(w) > 4 else 1 for w in text.split())


@pytest.mark.parametrize("target", [1, 2, 3, 17, 128, 1000, 4096])
async def test_completions_prompts_hit_the_target_within_one_token(target: int) -> None:
    counter = LocalCounter(bpe_like)
    builder = PromptBuilder(counter, chat=False, seed=1)
    await builder.calibrate()
    prompt = await builder.build(item(0, target))
    assert prompt.text is not None
    assert abs(bpe_like(prompt.text) - target) <= 1
    assert prompt.tokens == bpe_like(prompt.text)


async def test_without_calibration_multi_token_words_still_fit() -> None:
    builder = PromptBuilder(LocalCounter(bpe_like), chat=False, seed=2)
    for i, target in enumerate([50, 333, 900, 64]):
        prompt = await builder.build(item(i, target))
        assert prompt.text is not None
        assert abs(bpe_like(prompt.text) - target) <= 1


async def test_calibration_keeps_single_token_words_then_fits_exactly() -> None:
    builder = PromptBuilder(LocalCounter(bpe_like), chat=False, seed=3)
    kept = await builder.calibrate()
    assert kept == sum(1 for w in WORDS if len(w) <= 4)
    for i, target in enumerate([10, 200, 777]):
        prompt = await builder.build(item(i, target))
        assert prompt.text is not None and bpe_like(prompt.text) == target


async def test_prompts_differ_per_request_and_share_the_group_prefix() -> None:
    builder = PromptBuilder(LocalCounter(bpe_like), chat=False, seed=4)
    await builder.calibrate()
    a = await builder.build(item(0, 300, group=1, prefix=100))
    b = await builder.build(item(1, 300, group=1, prefix=100))
    c = await builder.build(item(2, 300, group=2, prefix=100))
    assert a.text and b.text and c.text
    shared = a.text[: len(a.text) // 4]
    assert b.text.startswith(shared) and not c.text.startswith(shared)
    assert a.text != b.text
    uncalibrated = PromptBuilder(LocalCounter(bpe_like), chat=False, seed=4)
    again = await uncalibrated.build(item(0, 300, 1, 100))
    assert abs(bpe_like(again.text or "") - 300) <= 1


async def test_chat_prompts_count_the_template() -> None:
    def chat_count(messages: list[dict[str, str]]) -> int:
        return 3 + sum(4 + bpe_like(m["content"]) - 1 for m in messages)

    builder = PromptBuilder(LocalCounter(bpe_like, chat_count), chat=True, seed=5)
    await builder.calibrate()
    prompt = await builder.build(item(0, 250, group=0, prefix=50))
    assert prompt.messages is not None and prompt.messages[0]["role"] == "system"
    assert abs(chat_count(prompt.messages) - 250) <= 1
    assert builder.chat_template_counted


async def test_tokenizer_file_counter_uses_the_tokenizers_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Encoding:
        def __init__(self, text: str) -> None:
            self.ids = list(range(bpe_like(text)))

    class FakeTokenizer:
        @classmethod
        def from_file(cls, path: str) -> FakeTokenizer:
            assert path == "tok.json"
            return cls()

        def encode(self, text: str) -> Encoding:
            return Encoding(text)

    monkeypatch.setitem(sys.modules, "tokenizers", types.SimpleNamespace(Tokenizer=FakeTokenizer))
    counter = hf_counter("tok.json")
    assert await counter.count("the people") == 5
    builder = PromptBuilder(counter, chat=False, seed=6)
    await builder.calibrate()
    prompt = await builder.build(item(0, 321))
    assert bpe_like(prompt.text or "") == 321
