"""Word list of the emulator's tokenizer.

Theory of operation: the tokenizer's vocabulary is built from a fixed list of lower-case ASCII
words.  A couple of hundred common English words come first (so generated text reads a little
like prose), followed by pronounceable consonant-vowel pseudo-words made by a fixed rule, until
``NUM_WORDS`` distinct words exist.  Everything is computed from constants, so every process
builds the same vocabulary in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

NUM_WORDS = 4096

_COMMON = """
the of and to in is that it for was on are as with be at by this have from or one had not but
what all were when we there can an your which their said if do will each about how up out them
then she many some so these would other into has more her two like him see time could no make
than first been its who now people my made over did down only way find use may water long little
very after words called just where most know get through back much go good new write our me man
too any day same right look think also around another came come work three word must because
does part even place well such here take why help put different away again off went old number
great tell men say small every found still between name should home big give air line set own
under read last never us left end along while might next sound below saw something thought both
few those always show large often together asked house world going want school important until
form food keep children feet land side without boy once animal life enough took four head above
kind began almost live page got earth need far hand high year mother light country father let
night picture being study second soon story since white ever paper hard near sentence better best
across during today however sure knew try told young sun thing whole hear example heard several
change answer room sea against top turned learn point city play toward five himself usually money
seen car morning user assistant system tool model token request server engine
"""

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def _pseudo_words() -> Iterator[str]:
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    for first in syllables:
        for second in syllables:
            yield first + second
    for first in syllables:
        for second in syllables:
            for third in _CONSONANTS:
                yield first + second + third


def build_word_list(num_words: int = NUM_WORDS) -> list[str]:
    """The first ``num_words`` distinct words: common English, then pseudo-words."""
    seen: set[str] = set()
    words: list[str] = []
    for word in itertools.chain(_COMMON.split(), _pseudo_words()):
        if word not in seen:
            seen.add(word)
            words.append(word)
            if len(words) == num_words:
                return words
    raise ValueError(f"cannot build {num_words} distinct words")
