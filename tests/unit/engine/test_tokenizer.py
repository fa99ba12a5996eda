from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ascendra_proxy.engine import IncrementalDetokenizer, Tokenizer

_TOK = Tokenizer()


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_text_round_trips(text: str) -> None:
    tok = _TOK
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:]) == text


def test_special_token_strings_map_to_their_ids(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("a<|eot_id|>b", add_special_tokens=False)
    assert tokenizer.eos_token_id in ids
    assert tokenizer.decode(ids) == "a<|eot_id|>b"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ab"


@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 1000, 4095])
@pytest.mark.parametrize("seed", [0, 1, 99])
def test_make_text_has_exact_length(tokenizer: Tokenizer, n: int, seed: int) -> None:
    text = tokenizer.make_text(n, seed=seed)
    assert len(tokenizer.encode(text, add_special_tokens=False)) == n
    assert len(tokenizer.encode(text)) == n + 1


def test_make_text_depends_on_seed(tokenizer: Tokenizer) -> None:
    assert tokenizer.make_text(50, seed=1) != tokenizer.make_text(50, seed=2)
    assert tokenizer.make_text(50, seed=1) == tokenizer.make_text(50, seed=1)


def test_words_are_single_tokens_and_unknown_words_fall_back_to_bytes(
    tokenizer: Tokenizer,
) -> None:
    assert len(tokenizer.encode(" the", add_special_tokens=False)) == 1
    ids = tokenizer.encode("Zq", add_special_tokens=False)
    assert ids == [tokenizer.byte_base + ord("Z"), tokenizer.byte_base + ord("q")]
    assert tokenizer.id_to_piece(ids[0]) == "<0x5A>"


def test_decode_rejects_ids_outside_the_vocabulary(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="out of vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])
    with pytest.raises(ValueError):
        tokenizer.decode([-1])


def test_incremental_detokenizer_holds_back_partial_characters(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(" hi 🚀 é", add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push([i]) for i in ids]
    assert "".join(pieces) == " hi 🚀 é"
    # the rocket is four byte tokens: three give "" and the fourth the whole character
    end = pieces.index("🚀")
    assert pieces[end - 3 : end] == ["", "", ""]
    assert [tokenizer.id_to_piece(i) for i in ids[end - 3 : end + 1]] == [
        "<0xF0>",
        "<0x9F>",
        "<0x9A>",
        "<0x80>",
    ]
    assert detok.text == " hi 🚀 é"


def test_incremental_detokenizer_flush_and_special_tokens(tokenizer: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.push([tokenizer.eos_token_id]) == ""  # skipped by default
    assert detok.push([tokenizer.byte_base + 0xF0]) == ""
    assert detok.flush() == "\ufffd"
    keep = IncrementalDetokenizer(tokenizer, skip_special_tokens=False)
    assert keep.push([tokenizer.eos_token_id]) == "<|eot_id|>"


def test_chat_template(tokenizer: Tokenizer) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(msgs)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids) == text
    cont = tokenizer.apply_chat_template(
        [*msgs, {"role": "assistant", "content": "hello"}],
        add_generation_prompt=False,
        continue_final_message=True,
    )
    assert cont.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nhello")
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert "\n\nab<|eot_id|>" in tokenizer.apply_chat_template([{"role": "user", "content": parts}])


def test_chat_template_rejects_both_prompt_flags(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}],
            add_generation_prompt=True,
            continue_final_message=True,
        )
