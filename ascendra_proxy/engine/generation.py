"""Deterministic token generation: the next token is a pure function of the sequence so far.

Theory of operation: every sequence carries a polynomial rolling hash of all its token ids,
``h(t_1..t_n) = Σ (t_i + 1)·B^(n-i) mod (2^61 - 1)``, updated in O(1) per appended token:
``h' = (h·B + t + 1) mod (2^61 - 1)``.  The same value at each block boundary is the chained
block hash the KV cache uses for prefix caching (a block's key depends on the block and
everything before it).

To pick the next token the generator takes the unreduced product ``h·B`` (which it needs for
the next hash anyway), whose middle bits are well mixed, and XORs two bit fields of it with a
key made from the engine seed and the request's seed: a 32-bit field ``r`` decides the kind
of token and a second field picks the token.  Kinds, by ``r``:

* EOS with probability ``eos_rate`` (not before ``min_tokens`` outputs, never with
  ``ignore_eos``); stop token ids are likewise re-drawn before ``min_tokens`` outputs;
* with a small probability the first byte of a multi-byte character (an emoji or an accented
  letter), after which the following tokens are the character's remaining bytes, so streaming
  clients see byte-level pieces of one character;
* punctuation now and then, otherwise a ``" word"`` token.

Whether a sequence is "inside" a multi-byte character is itself read off its tail (the
``pending`` UTF-8 bytes), so the rule stays a function of the token sequence: a request
continued elsewhere (same engine seed and request seed) from the same prompt+generated ids,
with the remaining ``max_tokens`` and ``min_tokens``, produces exactly the same remaining
tokens.  The common path costs about twenty Python operations per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import mul
from typing import Protocol

from .tokenizer import GenerationVocab

HASH_MOD = (1 << 61) - 1
HASH_BASE = 0x1C8C_5A3B_96F2_E4D1 % HASH_MOD
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_U32 = 1 << 32
_NO_IDS: frozenset[int] = frozenset()

# Characters emitted byte by byte.  2-, 3- and 4-byte UTF-8 forms.
MULTIBYTE_CHARS: tuple[str, ...] = (
    *"éüñçø",
    *"—€→中日",
    *(chr(c) for c in range(0x1F600, 0x1F650)),
    *"🚀🎉🔥🌍",
)


class SeqState(Protocol):
    """What :meth:`TokenGenerator.sample` reads and updates on a sequence."""

    tokens: list[int]
    hashes: list[int]
    hash: int
    key_r: int
    key_w: int
    pending: bytes
    num_output: int
    min_tokens: int
    ignore_eos: bool
    stop_ids: frozenset[int]


def extend_hash(h: int, token_id: int) -> int:
    """Rolling hash of a sequence after appending ``token_id``."""
    return (h * HASH_BASE + token_id + 1) % HASH_MOD


def block_hashes(token_ids: Sequence[int], block_size: int) -> tuple[int, list[int]]:
    """(hash of the whole sequence, hash at every full-block boundary).

    Equal to ``extend_hash`` applied token by token, but a full block is folded in at
    once: ``h' = (h·B^k + Σ t_i·B^(k-i) + Σ B^(k-i)) mod M`` (exact integer arithmetic),
    one C-level ``sum(map(...))`` per block instead of k Python steps (a prompt is hashed
    on every ``add_request``)."""
    powers, ones, shift = _block_powers(block_size)
    h = 0
    out: list[int] = []
    full = len(token_ids) - len(token_ids) % block_size
    for start in range(0, full, block_size):
        block = token_ids[start : start + block_size]
        h = (h * shift + sum(map(mul, block, powers)) + ones) % HASH_MOD
        out.append(h)
    for t in token_ids[full:]:
        h = (h * HASH_BASE + t + 1) % HASH_MOD
    return h, out


_POWERS: dict[int, tuple[tuple[int, ...], int, int]] = {}


def _block_powers(k: int) -> tuple[tuple[int, ...], int, int]:
    """(B^(k-1) .. B^0, their sum, B^k), all mod M, for folding a block of ``k`` tokens."""
    cached = _POWERS.get(k)
    if cached is None:
        powers = tuple(pow(HASH_BASE, k - 1 - i, HASH_MOD) for i in range(k))
        cached = _POWERS[k] = (powers, sum(powers), pow(HASH_BASE, k, HASH_MOD))
    return cached


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def seed_keys(engine_seed: int, request_seed: int | None) -> tuple[int, int]:
    """(key_r, key_w): the two keys XORed into every draw of one request."""
    key = splitmix64(engine_seed & _M64)
    if request_seed is not None:
        key = splitmix64(key ^ (request_seed & _M64) ^ 0x5EED)
    return key & _M32, key >> 36


def draw(h: int, key_r: int, key_w: int) -> tuple[int, int]:
    """(r, w) for a sequence of hash ``h``: r is 32 bits (token kind), w >= 0 picks the token."""
    hb = h * HASH_BASE
    return ((hb >> 61) ^ key_r) & _M32, (hb >> 93) ^ key_w


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # continuation byte or invalid lead


def _continuation_range(partial: bytes) -> tuple[int, int]:
    """Valid next byte range after an incomplete UTF-8 prefix (RFC 3629 table)."""
    if len(partial) == 1:
        lead = partial[0]
        special = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
        return special.get(lead, (0x80, 0xBF))
    return 0x80, 0xBF


def pending_utf8(tail_bytes: Sequence[int]) -> bytes:
    """The incomplete UTF-8 character at the end of a byte-token tail, or b""."""
    data = bytes(tail_bytes[-3:])
    for start in range(len(data) - 1, -1, -1):
        need = _utf8_length(data[start])
        if need == 0:
            continue  # a continuation byte: keep looking for its lead
        rest = data[start:]
        if need > len(rest) and all(0x80 <= b <= 0xBF for b in rest[1:]):
            return rest
        return b""
    return b""


class TokenGenerator:
    """Chooses next tokens; holds only immutable tables (shared by all requests)."""

    def __init__(self, vocab: GenerationVocab, eos_rate: float, block_size: int) -> None:
        if not 0.0 <= eos_rate < 1.0:
            raise ValueError("eos_rate must be in [0, 1)")
        self.vocab = vocab
        self.eos_token_id = vocab.eos_token_id
        self._block_size = block_size
        self._words = vocab.word_ids
        self._n_words = len(vocab.word_ids)
        self._punct = vocab.punct_ids
        self._byte_base = vocab.byte_base
        self._eos_thr = int(eos_rate * _U32)
        self._mb_thr = self._eos_thr + int(0.01 * _U32)
        self._punct_thr = self._mb_thr + int(0.08 * _U32)
        self._mb_chars = tuple(c.encode() for c in MULTIBYTE_CHARS)
        nexts: dict[bytes, set[int]] = {}
        for enc in self._mb_chars:
            for i in range(1, len(enc)):
                nexts.setdefault(enc[:i], set()).add(enc[i])
        self._next_bytes = {k: tuple(sorted(v)) for k, v in nexts.items()}

    def is_byte_token(self, token_id: int) -> bool:
        return self._byte_base <= token_id < self._byte_base + 256

    def pending_from_tail(self, token_ids: Sequence[int]) -> bytes:
        """Incomplete UTF-8 character at the end of ``token_ids`` (byte tokens only)."""
        tail: list[int] = []
        for tid in reversed(token_ids[-3:]):
            if not self.is_byte_token(tid):
                break
            tail.append(tid - self._byte_base)
        tail.reverse()
        return pending_utf8(tail)

    def sample(self, seq: SeqState) -> int:
        """Append the next token to ``seq`` (tokens, hash, block hashes, pending, count)."""
        hb = seq.hash * HASH_BASE
        r = ((hb >> 61) ^ seq.key_r) & _M32
        if r < self._punct_thr or seq.pending or (seq.stop_ids and seq.num_output < seq.min_tokens):
            early = seq.num_output < seq.min_tokens
            allow_eos = not (early or seq.ignore_eos)
            stop = seq.stop_ids if early else _NO_IDS
            w = (hb >> 93) ^ seq.key_w
            tok, seq.pending = self._choose(r, w, seq.pending, allow_eos, stop)
        else:
            tok = self._words[((hb >> 93) ^ seq.key_w) % self._n_words]
        tokens = seq.tokens
        tokens.append(tok)
        h = (hb + tok + 1) % HASH_MOD
        seq.hash = h
        if len(tokens) % self._block_size == 0:
            seq.hashes.append(h)
        seq.num_output += 1
        return tok

    def next_token(
        self,
        h: int,
        keys: tuple[int, int],
        pending: bytes = b"",
        allow_eos: bool = True,
        stop_ids: frozenset[int] = _NO_IDS,
    ) -> tuple[int, bytes]:
        """(next token id, pending bytes after it) for a sequence of hash ``h``.

        ``allow_eos`` is False before ``min_tokens`` outputs and with ``ignore_eos``;
        ``stop_ids`` are the stop token ids that must not be drawn now (before ``min_tokens``).
        """
        r, w = draw(h, *keys)
        return self._choose(r, w, pending, allow_eos, stop_ids)

    def _choose(
        self, r: int, w: int, pending: bytes, allow_eos: bool, stop_ids: frozenset[int]
    ) -> tuple[int, bytes]:
        if pending:
            return self._continue_char(w, pending)
        if r < self._eos_thr:
            if allow_eos:
                return self.eos_token_id, b""
        elif r < self._mb_thr:
            enc = self._mb_chars[w % len(self._mb_chars)]
            return self._byte_base + enc[0], enc[:1]
        elif r < self._punct_thr:
            tok = self._punct[w % len(self._punct)]
            if tok not in stop_ids:
                return tok, b""
        idx = w % self._n_words
        tok = self._words[idx]
        while tok in stop_ids:
            idx = (idx + 1) % self._n_words
            tok = self._words[idx]
        return tok, b""

    def _continue_char(self, w: int, pending: bytes) -> tuple[int, bytes]:
        options = self._next_bytes.get(pending)
        if options is not None:
            b = options[w % len(options)]
        else:
            lo, hi = _continuation_range(pending)
            b = lo + w % (hi - lo + 1)
        partial = pending + bytes([b])
        done = len(partial) >= _utf8_length(partial[0])
        return self._byte_base + b, (b"" if done else partial)
