"""Fast streaming detokenization for the emulator's hot path.

Theory of operation: almost every generated token is a whole word or punctuation whose bytes
are complete UTF-8, so :class:`PieceTable` decodes each such token once per server.  A
:class:`StreamDecoder` answers a one-token push from that table while no partial character is
buffered; byte tokens (pieces of a multi-byte character) go through an incremental UTF-8
decoder that returns "" until the character is complete, exactly like the engine's
``IncrementalDetokenizer`` (special tokens are skipped).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from ascendra_proxy.engine.tokenizer import Tokenizer


class PieceTable:
    """Text of every token that decodes on its own (``None`` for partial UTF-8 bytes)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        texts: list[str | None] = []
        for tid in range(tokenizer.vocab_size):
            if tokenizer.is_special(tid):
                texts.append("")
                continue
            try:
                texts.append(tokenizer.token_bytes(tid).decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
        self.texts: tuple[str | None, ...] = tuple(texts)


class StreamDecoder:
    """Incremental detokenizer of one request (see the module docstring)."""

    __slots__ = ("_buffered", "_decoder", "_table")

    def __init__(self, table: PieceTable) -> None:
        self._table = table
        self._decoder: codecs.IncrementalDecoder | None = None
        self._buffered = False

    def push(self, token_ids: Sequence[int]) -> str:
        if not self._buffered and len(token_ids) == 1:
            text = self._table.texts[token_ids[0]]
            if text is not None:
                return text
        return self._slow(token_ids)

    def _slow(self, token_ids: Sequence[int]) -> str:
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        data = self._table.tokenizer.decode_bytes(token_ids, skip_special_tokens=True)
        text: str = self._decoder.decode(data, final=False)
        self._buffered = bool(self._decoder.getstate()[0])
        return text
