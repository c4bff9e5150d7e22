"""Incremental detokenization: byte-fallback emoji, "▁" spacing, byte-level BPE, invalid UTF-8, stop strings."""

from __future__ import annotations

import pytest

from lookinside.core.decoding.detokenize import REPLACEMENT, IncrementalDecoder, StopStrings, decode, token_text
from lookinside.tiny import ASSETS

LLAMA = "Hi 🦙 llama, and 日本語 too"


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def tiny_tok():
    return _tokenizer(ASSETS)


@pytest.fixture(scope="module")
def phi3_tok(phi3_tokenizer_dir):
    return _tokenizer(phi3_tokenizer_dir)


@pytest.fixture(scope="module")
def byte_level_tok():
    """A GPT-2-style byte-level BPE built in memory: every byte is a piece, "Ġ" marks spaces."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["hello world, the llama says hello"] * 5, vocab_size=300, min_frequency=1)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)


def _stream(tokenizer, ids, context=None):
    decoder = IncrementalDecoder(tokenizer, context=context)
    deltas = [decoder.push(i) for i in ids]
    return deltas, decoder.flush()


@pytest.mark.parametrize("which", ["tiny_tok", "phi3_tok", "byte_level_tok"])
def test_a_four_byte_emoji_streams_whole_and_never_as_a_replacement_character(request, which):
    tokenizer = request.getfixturevalue(which)
    ids = tokenizer(LLAMA, add_special_tokens=False).input_ids
    deltas, rest = _stream(tokenizer, ids)
    assert REPLACEMENT not in "".join(deltas) and rest == ""
    assert "".join(deltas) == tokenizer.decode(ids) == LLAMA
    assert any("🦙" in d and len(d) <= 3 for d in deltas)  # arrives in one piece
    assert deltas.count("") >= 3  # its first three bytes were held back, whatever the tokenizer
    emoji_pieces = [p for p in tokenizer.convert_ids_to_tokens(ids) if p in ("<0xF0>", "<0x9F>", "<0xA6>", "<0x99>")]
    if which != "byte_level_tok":
        assert len(emoji_pieces) == 4  # the SentencePiece tokenizers really split it into four byte tokens
        held = [d for d, p in zip(deltas, tokenizer.convert_ids_to_tokens(ids)) if p in emoji_pieces[:3]]
        assert held == ["", "", ""]


def test_phi3_llama_bytes_are_four_tokens(phi3_tok):
    ids = phi3_tok("🦙", add_special_tokens=False).input_ids
    assert phi3_tok.convert_ids_to_tokens(ids)[-4:] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]


@pytest.mark.parametrize("which", ["tiny_tok", "phi3_tok"])
def test_sentencepiece_spacing_after_a_prompt(request, which):
    tokenizer = request.getfixturevalue(which)
    prompt = tokenizer("The capital of France is").input_ids
    reply = tokenizer(" Paris. It is big", add_special_tokens=False).input_ids
    deltas, _ = _stream(tokenizer, reply, context=prompt)
    assert deltas[0] == " Paris"  # the "▁" of the first new piece is a real space after the prompt
    assert "".join(deltas) == " Paris. It is big"


def test_special_tokens_are_kept_and_spaced_as_decode_does(tiny_tok):
    ids = tiny_tok("<|assistant|> Hello<|end|>", add_special_tokens=False).input_ids
    assert decode(tiny_tok, ids) == tiny_tok.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("which", ["tiny_tok", "phi3_tok", "byte_level_tok"])
def test_invalid_utf8_from_a_random_model_never_crashes(request, which):
    tokenizer = request.getfixturevalue(which)
    pieces = ["<0xF0>", "<0x9F>", "<0x80>", "<0x80>", "<0x80>", "<0x80>", "<0xC3>"]
    if which == "byte_level_tok":
        pieces = ["ð", "Ł", "Ģ", "Ģ", "Ģ", "Ģ", "Ã"]  # byte-level spellings of F0 9F 80 80 80 80 C3 (illegal)
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert None not in ids and tokenizer.unk_token_id not in ids
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    out = "".join(deltas) + decoder.flush()
    assert REPLACEMENT in out  # shown, not raised; held back at most four tokens
    assert "".join(deltas[:4]) != ""  # a character is at most four bytes: nothing waits longer


def test_ids_outside_the_vocabulary_decode_to_nothing(tiny_tok):
    assert decode(tiny_tok, [len(tiny_tok) + 10]) == ""  # a padded vocab (Phi-3: 32064 > 32011) has such ids


def test_token_text_shows_spaces_and_lone_bytes(tiny_tok):
    paris = tiny_tok(" Paris", add_special_tokens=False).input_ids[-1]
    assert token_text(tiny_tok, paris) == " Paris"
    assert token_text(tiny_tok, tiny_tok.convert_tokens_to_ids("<0xF0>")) == "<0xF0>"


def test_stop_strings_are_held_back_while_forming_and_cut():
    stops = StopStrings(["\nUser:", "###"])
    assert stops.push("Hello") == "Hello"
    assert stops.push(" there\nUs") == " there"  # "\nUs" might begin "\nUser:"
    assert stops.push("ually") == "\nUsually"  # it did not: released
    assert stops.push(" yes#") == " yes" and stops.push("#") == "" and not stops.stopped
    assert stops.push("# after") == "" and stops.stopped  # "###" found: it and all after are cut
    assert stops.push("more") == "" and stops.flush() == ""


def test_stop_string_inside_one_piece_and_flush_at_the_end():
    stops = StopStrings(("END",))
    assert stops.push("abcENDdef") == "abc" and stops.stopped
    other = StopStrings(("END",))
    assert other.push("abcEN") == "abc" and other.flush() == "EN"  # no more text: the tail was not a stop
    assert StopStrings().push("anything") == "anything"
