"""A small deterministic tokenizer with exact round trips and predictable token counts.

Theory of operation: the vocabulary is, in id order,

* special tokens (``<|begin_of_text|>`` = BOS 0, ``<|eot_id|>`` = EOS 4, chat-header tokens),
* 256 byte tokens ``<0x00>``..``<0xFF>`` (byte fallback),
* a few punctuation and whitespace pieces (``.``, ``,``, ``\\n`` ...),
* every word of :mod:`.words` twice: as ``" word"`` and as ``"word"``.

``encode`` splits out special-token strings, cuts the rest into pieces with a GPT-2 style
pattern (an optional leading space plus a run of letters, digits or punctuation; whitespace
runs), and maps each piece to its token if the piece is in the vocabulary, else to the byte
tokens of its UTF-8 encoding.  Every token stands for a fixed byte string, so ``decode`` is a
concatenation and ``decode(encode(t)) == t`` for any text ``t`` (skipping only the BOS).
Because the words are plain lower-case ASCII, ``"w1 w2 ... wn"`` built from vocabulary words
encodes to exactly ``n`` tokens: :meth:`Tokenizer.make_text` uses this to build prompts of an
exact length.

Byte tokens also appear in generated output (see :mod:`.generation`), so a decoded id list may
end inside a multi-byte character.  :class:`IncrementalDetokenizer` returns only complete
characters (empty text while a character is incomplete), like vLLM's streaming detokenizer.
"""

from __future__ import annotations

import codecs
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .words import build_word_list

BOS_TEXT = "<|begin_of_text|>"
EOS_TEXT = "<|eot_id|>"  # ends a chat turn and a completion alike (ids as in the tiny test model)
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS_TEXT,
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    EOS_TEXT,
    "<|pad|>",
)
PUNCTUATION: tuple[str, ...] = (".", ",", "!", "?", ":", ";", "'", "-", "(", ")", "\n", "\n\n", " ")

_PIECE_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


@dataclass(frozen=True, slots=True)
class GenerationVocab:
    """The id ranges the token generator draws from."""

    word_ids: tuple[int, ...]  # " word" tokens
    punct_ids: tuple[int, ...]  # "." "," "\n" ...
    byte_base: int  # id of byte token 0x00
    eos_token_id: int


class Tokenizer:
    """Deterministic word/byte tokenizer; see the module docstring."""

    def __init__(self) -> None:
        pieces: list[bytes] = [s.encode() for s in SPECIAL_TOKENS]
        self.byte_base = len(pieces)
        pieces.extend(bytes([b]) for b in range(256))
        punct_base = len(pieces)
        pieces.extend(p.encode() for p in PUNCTUATION)
        self._words = build_word_list()
        word_base = len(pieces)
        for word in self._words:
            pieces.append(b" " + word.encode())
            pieces.append(word.encode())
        self._pieces: tuple[bytes, ...] = tuple(pieces)
        self._num_special = len(SPECIAL_TOKENS)
        self._special_ids = {s: i for i, s in enumerate(SPECIAL_TOKENS)}
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")")
        self._piece_ids: dict[str, int] = {}
        for i in range(punct_base, len(pieces)):
            self._piece_ids[pieces[i].decode()] = i
        self._space_word_ids = tuple(word_base + 2 * i for i in range(len(self._words)))
        self._punct_ids = tuple(range(punct_base, word_base))

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def bos_token_id(self) -> int:
        return self._special_ids[BOS_TEXT]

    @property
    def eos_token_id(self) -> int:
        return self._special_ids[EOS_TEXT]

    def is_special(self, token_id: int) -> bool:
        return 0 <= token_id < self._num_special

    def generation_vocab(self) -> GenerationVocab:
        return GenerationVocab(
            word_ids=self._space_word_ids,
            punct_ids=self._punct_ids,
            byte_base=self.byte_base,
            eos_token_id=self.eos_token_id,
        )

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; special-token strings in the text map to their ids."""
        ids: list[int] = [self.bos_token_id] if add_special_tokens else []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2 == 1:
                ids.append(self._special_ids[part])
            elif part:
                self._encode_plain(part, ids)
        return ids

    def _encode_plain(self, text: str, out: list[int]) -> None:
        piece_ids = self._piece_ids
        base = self.byte_base
        for match in _PIECE_RE.finditer(text):
            piece = match.group()
            tid = piece_ids.get(piece)
            if tid is not None:
                out.append(tid)
            elif piece[0] == " " and (tid := piece_ids.get(piece[1:])) is not None:
                out.append(base + 32)
                out.append(tid)
            else:
                out.extend(base + b for b in piece.encode())

    # ------------------------------------------------------------------ decoding
    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self._pieces):
            raise ValueError(f"token id {token_id} is out of vocabulary (size {self.vocab_size})")
        return self._pieces[token_id]

    def decode_bytes(self, ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        pieces = self._pieces
        n = len(pieces)
        out: list[bytes] = []
        for tid in ids:
            if not 0 <= tid < n:
                raise ValueError(f"token id {tid} is out of vocabulary (size {n})")
            if skip_special_tokens and tid < self._num_special:
                continue
            out.append(pieces[tid])
        return b"".join(out)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; bytes of incomplete or invalid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    def id_to_piece(self, token_id: int) -> str:
        """Display form of one token (byte tokens as ``<0xAB>``), for ``/tokenize`` output."""
        if self.byte_base <= token_id < self.byte_base + 256:
            return f"<0x{token_id - self.byte_base:02X}>"
        return self.token_bytes(token_id).decode()

    # ----------------------------------------------------------------- utilities
    def make_text(self, num_tokens: int, seed: int = 0) -> str:
        """Text of vocabulary words that encodes to exactly ``num_tokens`` tokens (no BOS)."""
        if num_tokens < 0:
            raise ValueError("num_tokens must be >= 0")
        rng = random.Random(seed)
        words = rng.choices(self._words, k=num_tokens)
        return " ".join(words)

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, object]],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
    ) -> str:
        """Llama-3 style chat rendering (the text starts with the BOS string)."""
        if continue_final_message and add_generation_prompt:
            raise ValueError(
                "continue_final_message and add_generation_prompt are mutually exclusive"
            )
        if continue_final_message and not messages:
            raise ValueError("continue_final_message needs at least one message")
        parts = [BOS_TEXT]
        for i, msg in enumerate(messages):
            role = str(msg.get("role", "user"))
            content = _content_text(msg.get("content"))
            parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}")
            if not (continue_final_message and i == len(messages) - 1):
                parts.append("<|eot_id|>")
        if add_generation_prompt:
            parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)


def _content_text(content: object) -> str:
    """Message content as text: a string, None, or a list of ``{"type":"text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ValueError("message content must be a string or a list of text parts")


class IncrementalDetokenizer:
    """Streams text for a growing id list, holding back incomplete UTF-8 characters.

    ``push(ids)`` returns the newly completed text ("" while a character is incomplete);
    ``flush()`` returns what is still held back (as U+FFFD replacement characters).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []

    def push(self, ids: Iterable[int]) -> str:
        data = self._tokenizer.decode_bytes(ids, self._skip)
        text: str = self._decoder.decode(data, final=False)
        if text:
            self._parts.append(text)
        return text

    def flush(self) -> str:
        text: str = self._decoder.decode(b"", final=True)
        if text:
            self._parts.append(text)
        return text

    @property
    def text(self) -> str:
        """All text returned so far."""
        return "".join(self._parts)
