"""Prompts of an exact token count.

Theory of operation: a prompt is a run of common English words drawn from a generator seeded
by ``(seed, request index)`` (so every request's text is different and a rerun is identical),
optionally preceded by its prefix group's shared system prompt (drawn from ``(seed, group)``).
To hit a target length the builder measures candidate texts with a :class:`TokenCounter` and
moves the word count: a first guess from the tokens-per-word ratio learnt so far, then
secant-like steps inside a shrinking bracket, stopping on an exact hit or when no word count
lies strictly between the best under- and over-shoot.  Common words are one token in most
vocabularies, so this usually takes one or two counts and ends exact, else within a token.

Counters: :class:`RemoteCounter` asks the target's ``POST /tokenize`` (vLLM shape
``{"prompt"}`` or ``{"messages"}`` -> ``{"count", "tokens"}``; llama.cpp shape ``{"content"}``
-> ``{"tokens"}`` as a fallback); :class:`LocalCounter` wraps a local tokenizer (a Hugging
Face ``tokenizer.json`` via the optional ``tokenizers`` package, or the emulator's own
tokenizer); :class:`ApproxCounter` assumes one token per word plus one (a last resort,
announced with a warning).  Chat prompts are counted with the chat template when the counter
can (``/tokenize`` with ``messages``), so the server's ``prompt_tokens`` matches the target.

Block prompts (a Mooncake trace replay, items with ``blocks``) are token ids, not text: each
trace block is a fixed run of ids (:class:`loadgen.blocks.BlockTokens`) drawn from the ids of
words that are one token for the target's tokenizer (:meth:`PromptBuilder.learn_token_ids`
asks the counter for them: ``/tokenize`` returns ids, local tokenizers too), so a request's
length is exact and two requests share exactly the blocks the trace says.  They are sent as
a completions ``prompt`` list of ints, which vLLM, SGLang and the emulator take as is.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp
import orjson

from loadgen.blocks import BlockTokens
from loadgen.workloads import WorkItem

__all__ = [
    "ApproxCounter",
    "LocalCounter",
    "Prompt",
    "PromptBuilder",
    "RemoteCounter",
    "TokenCounter",
    "TokenIdSource",
    "TokenizeUnavailable",
    "emulator_counter",
    "hf_counter",
]

# Common English words, one token each in most vocabularies (calibrate() checks).
_WORD_TEXT = """the of and to in is it that was for on are with as be at this have from or one
had by not but what all were we when your can said there use an each which she do how their if
will up other about out many then them these so some her would make like him into time has look
two more write go see number no way could people my than first water been call who its now find
long down day did get come made may part"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())
MAX_ROUNDS = 12
T = TypeVar("T")

Messages = list[dict[str, str]]


class TokenizeUnavailable(RuntimeError):
    """No usable ``/tokenize`` endpoint at the target."""


class TokenCounter(Protocol):
    async def count(self, text: str) -> int: ...

    async def count_chat(self, messages: Messages) -> int | None:
        """Tokens of the chat prompt with its template, or None if this counter cannot tell."""
        ...


@runtime_checkable
class TokenIdSource(Protocol):
    """A counter that can also say which token ids a text is."""

    async def ids(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str | None  # completions
    messages: Messages | None  # chat
    tokens: int  # as measured by the counter
    token_ids: list[int] | None = None  # a token-id prompt (block traces), sent as is


class RemoteCounter:
    """Counts with the target's ``/tokenize`` (first of ``urls`` that answers)."""

    def __init__(self, session: aiohttp.ClientSession, urls: Sequence[str], model: str) -> None:
        self._session = session
        self._urls = list(urls)
        self._model = model
        self._url: str | None = None
        self._llama_shape = False

    async def probe(self) -> str:
        """Find a working endpoint; raise :class:`TokenizeUnavailable` if none."""
        problems = []
        for url in self._urls:
            self._url = url
            try:
                await self.count("hello world")
                return url
            except (TimeoutError, aiohttp.ClientError, TokenizeUnavailable) as exc:
                problems.append(f"{url}: {exc}")
        self._url = None
        raise TokenizeUnavailable("; ".join(problems) or "no /tokenize URL to try")

    async def ids(self, text: str) -> list[int]:
        body: dict[str, Any] = {"model": self._model, "prompt": text}
        if self._llama_shape:
            body = {"content": text, "add_special": True}
        doc = await self._post_doc(body)
        tokens = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise TokenizeUnavailable(f"/tokenize gave no token ids: {str(doc)[:200]}")
        return tokens

    async def count(self, text: str) -> int:
        if self._llama_shape:
            return await self._post({"content": text, "add_special": True})
        try:
            return await self._post({"model": self._model, "prompt": text})
        except TokenizeUnavailable:
            n = await self._post({"content": text, "add_special": True})
            self._llama_shape = True
            return n

    async def count_chat(self, messages: Messages) -> int | None:
        if self._llama_shape:
            return None
        body = {"model": self._model, "messages": messages, "add_generation_prompt": True}
        try:
            return await self._post(body)
        except TokenizeUnavailable:
            return None

    async def _post_doc(self, body: dict[str, Any]) -> Any:
        if self._url is None:
            raise TokenizeUnavailable("call probe() first")
        async with self._session.post(self._url, data=orjson.dumps(body), headers=_JSON) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise TokenizeUnavailable(f"HTTP {resp.status}: {raw[:200]!r}")
        return orjson.loads(raw)

    async def _post(self, body: dict[str, Any]) -> int:
        doc = await self._post_doc(body)
        raw = orjson.dumps(doc)
        if isinstance(doc, dict) and isinstance(doc.get("count"), int):
            return int(doc["count"])
        if isinstance(doc, dict) and isinstance(doc.get("tokens"), list):
            return len(doc["tokens"])
        raise TokenizeUnavailable(f"unexpected /tokenize answer: {raw[:200]!r}")


_JSON = {"Content-Type": "application/json"}


class LocalCounter:
    """Counts with in-process functions (text -> tokens, messages -> tokens or None)."""

    def __init__(
        self,
        count_text: Callable[[str], int],
        count_messages: Callable[[Messages], int | None] | None = None,
        text_ids: Callable[[str], list[int]] | None = None,
    ) -> None:
        self._text = count_text
        self._messages = count_messages
        self._ids = text_ids

    async def count(self, text: str) -> int:
        return self._text(text)

    async def ids(self, text: str) -> list[int]:
        if self._ids is None:
            raise TokenizeUnavailable("this tokenizer gives counts only, no token ids")
        return self._ids(text)

    async def count_chat(self, messages: Messages) -> int | None:
        return None if self._messages is None else self._messages(messages)


class ApproxCounter(LocalCounter):
    """One token per word plus a BOS: only when nothing better is available."""

    def __init__(self) -> None:
        super().__init__(lambda text: 1 + len(text.split()))


def hf_counter(path: str) -> LocalCounter:
    """A Hugging Face ``tokenizer.json`` (needs the optional ``tokenizers`` package)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise SystemExit(
            "--tokenizer PATH needs the 'tokenizers' package (pip install tokenizers)"
        ) from None
    tok = Tokenizer.from_file(path)
    return LocalCounter(
        lambda text: len(tok.encode(text).ids), text_ids=lambda t: tok.encode(t).ids
    )


def emulator_counter() -> LocalCounter:
    """The emulator's tokenizer, counted locally (same ids as the emulator serves)."""
    from ascendra_proxy.engine.tokenizer import Tokenizer

    tok = Tokenizer()

    def chat(messages: Messages) -> int:
        return len(tok.encode(tok.apply_chat_template(messages), add_special_tokens=False))

    return LocalCounter(lambda text: len(tok.encode(text)), chat, tok.encode)


class PromptBuilder:
    """Builds exact-length prompts for work items (one builder per run)."""

    def __init__(self, counter: TokenCounter, *, chat: bool, seed: int | str) -> None:
        self._counter = counter
        self._chat = chat
        self._seed = seed
        self._ratio = 1.0  # tokens per word, learnt
        self._overhead = 1.0  # tokens besides the words (BOS, template), learnt
        self._prefixes: dict[int, asyncio.Task[str]] = {}
        self._vocab: tuple[str, ...] = WORDS
        self._blocks: BlockTokens | None = None
        self._word_ids: list[int] = []  # single-token word ids, for block prompts
        self.chat_template_counted = True

    async def calibrate(self) -> int:
        """Keep only the words that are exactly one token for this counter; returns how many.

        With single-token words a text of k words measures ``overhead + k`` tokens, so most
        prompts fit exactly on the first or second count.
        """
        base = await self._counter.count("the")
        counts = await asyncio.gather(*(self._counter.count("the " + w) for w in WORDS))
        single = tuple(w for w, n in zip(WORDS, counts, strict=True) if n - base == 1)
        if len(single) >= 8:
            self._vocab = single
            self._ratio, self._overhead = 1.0, float(base - 1)
        return len(single)

    async def learn_token_ids(self) -> int:
        """Learn the ids of single-token words (for block prompts); returns how many."""
        if not isinstance(self._counter, TokenIdSource):
            raise TokenizeUnavailable("block prompts need a tokenizer that gives token ids")
        source = self._counter
        base = await source.ids("the")
        found = await asyncio.gather(*(source.ids("the " + w) for w in WORDS))
        word_ids = sorted(
            {ids[-1] for ids in found if len(ids) == len(base) + 1 and ids[: len(base)] == base}
        )
        if len(word_ids) < 8:
            raise TokenizeUnavailable(f"only {len(word_ids)} single-token words for block prompts")
        self._word_ids = word_ids
        return len(word_ids)

    def _block_prompt(self, item: WorkItem) -> Prompt:
        blocks = self._blocks
        if blocks is None or blocks.block_tokens != item.block_tokens:
            if not self._word_ids:
                raise RuntimeError("call learn_token_ids() before building block prompts")
            seed = self._seed
            if not isinstance(seed, int):
                seed = zlib.crc32(seed.encode())
            blocks = BlockTokens(self._word_ids, seed, item.block_tokens)
            self._blocks = blocks
        ids = blocks.prompt(item.blocks, item.prompt_tokens)
        return Prompt(None, None, len(ids), ids)

    async def build(self, item: WorkItem) -> Prompt:
        if item.blocks:
            if self._chat:
                raise ValueError("block prompts are token ids: use the completions endpoint")
            return self._block_prompt(item)
        prefix = ""
        if item.prefix_group is not None and item.prefix_tokens > 0:
            prefix = await self._prefix(item.prefix_group, item.prefix_tokens)
        words = self._words(f"req:{item.index}", item.prompt_tokens)
        if self._chat:
            return await self._fit_chat(words, prefix, item.prompt_tokens)
        head = prefix + " " if prefix else ""
        text, n = await self._fit(
            lambda k: head + " ".join(words[:k]),
            self._counter.count,
            item.prompt_tokens,
            len(words),
        )
        return Prompt(text, None, n)

    async def _fit_chat(self, words: list[str], prefix: str, target: int) -> Prompt:
        def messages(k: int) -> Messages:
            user = {"role": "user", "content": " ".join(words[:k])}
            return [{"role": "system", "content": prefix}, user] if prefix else [user]

        async def count(msgs: Messages) -> int:
            n = await self._counter.count_chat(msgs)
            if n is None:  # no template-aware counter: count the bare text
                self.chat_template_counted = False
                n = await self._counter.count("\n".join(m["content"] for m in msgs))
            return n

        msgs, n = await self._fit(messages, count, target, len(words))
        return Prompt(None, msgs, n)

    async def _prefix(self, group: int, tokens: int) -> str:
        task = self._prefixes.get(group)
        if task is None:
            words = self._words(f"prefix:{group}", tokens)
            coro = self._fit(lambda k: " ".join(words[:k]), self._counter.count, tokens, len(words))
            task = asyncio.ensure_future(_first(coro))
            self._prefixes[group] = task
        return await task

    async def _fit(
        self,
        make: Callable[[int], T],
        count: Callable[[T], Awaitable[int]],
        target: int,
        k_max: int,
    ) -> tuple[T, int]:
        """Word count k in [1, k_max] whose text measures closest to ``target`` tokens."""
        seen: dict[int, int] = {}
        k = _clamp(round((target - self._overhead) / self._ratio), k_max)
        for _ in range(MAX_ROUNDS):
            seen[k] = n = await count(make(k))
            if n == target:
                break
            under = [j for j, m in seen.items() if m < target]
            over = [j for j, m in seen.items() if m > target]
            lo = max(under) if under else 0
            hi = min(over) if over else k_max + 1
            step = round((target - n) / self._ratio) or (1 if n < target else -1)
            k = min(max(k + step, lo + 1), hi - 1)
            if k in seen or not 1 <= k <= k_max:
                break
        best = min(seen, key=lambda j: (abs(seen[j] - target), -j))
        self._learn(seen)
        return make(best), seen[best]

    def _words(self, key: str, target_tokens: int) -> list[str]:
        rng = random.Random(f"{self._seed}:{key}")
        return rng.choices(self._vocab, k=2 * target_tokens + 16)

    def _learn(self, seen: dict[int, int]) -> None:
        if len(seen) >= 2:
            (k0, n0), (k1, n1) = sorted(seen.items())[:2]
            self._ratio = max(0.2, (n1 - n0) / (k1 - k0)) if k1 != k0 else self._ratio
        k, n = next(iter(seen.items()))
        self._overhead = n - self._ratio * k


async def _first(coro: Awaitable[tuple[str, int]]) -> str:
    return (await coro)[0]


def _clamp(k: int, k_max: int) -> int:
    return max(1, min(k, k_max))
