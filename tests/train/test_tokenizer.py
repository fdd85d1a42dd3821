"""Tokenizers trained on the corpus: byte-level BPE and characters, special and control tokens."""

from __future__ import annotations

import random

import pytest

from genloom.core.errors import ConfigError
from genloom.models.tokenizer import (
    BASE_SPECIAL_TOKENS,
    EOD,
    TokenizerConfig,
    control_token,
    default_vocab_size,
    format_chat,
    train_tokenizer,
)

TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé works too: 日本語.\n" * 50


def test_bpe_round_trips_any_text_and_keeps_special_ids_fixed() -> None:
    tok = train_tokenizer(iter([TEXT, "more text"]), TokenizerConfig(vocab_size=400))
    assert tok.get_vocab_size() <= 400 + len(BASE_SPECIAL_TOKENS)
    for i, special in enumerate(BASE_SPECIAL_TOKENS):
        assert tok.token_to_id(special) == i
    sample = "never seen: ÿ€😀 \t tabs"
    assert tok.decode(tok.encode(sample).ids) == sample  # byte level: nothing is unknown
    assert len(tok.encode(TEXT).ids) < len(TEXT) / 2  # merges were learned


def test_bpe_vocab_defaults_to_the_corpus_size() -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 7))) for _ in range(3000)]
    corpus = [" ".join(rng.choice(words) for _ in range(50)) + "\n" for _ in range(1000)]  # ~250k chars
    auto = train_tokenizer(iter(corpus), TokenizerConfig())
    sized = train_tokenizer(iter(corpus), TokenizerConfig(vocab_size=512))
    assert default_vocab_size(sum(map(len, corpus))) == 512
    assert auto.get_vocab() == sized.get_vocab()  # truncating the big run equals training at that size
    assert auto.encode(corpus[0]).ids == sized.encode(corpus[0]).ids
    assert default_vocab_size(100_000_000) == 8192


def test_char_mode_has_one_token_per_character() -> None:
    tok = train_tokenizer(iter(["abca\n", "bd"]), TokenizerConfig(kind="char"))
    ids = tok.encode("abcd\n").ids
    assert len(ids) == 5
    assert tok.decode(ids) == "abcd\n"
    assert tok.encode(EOD + "a").ids[0] == tok.token_to_id(EOD)


def test_control_and_chat_tokens_are_single_tokens() -> None:
    ctl = control_token("sentiment", "positive")
    tok = train_tokenizer(iter([TEXT]), TokenizerConfig(vocab_size=300, control_tokens=[ctl]))
    assert tok.encode(ctl + "hi").ids[0] == tok.token_to_id(ctl)
    chat = format_chat([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert chat == "<|user|>hi<|end|>\n<|assistant|>"
    assert tok.encode(chat).tokens[0] == "<|user|>"
    with pytest.raises(ConfigError):
        format_chat([{"role": "robot", "content": "x"}])


def test_max_chars_limits_what_the_tokenizer_reads() -> None:
    def endless():
        while True:
            yield "abc def "

    tok = train_tokenizer(endless(), TokenizerConfig(kind="char", max_chars=1000))
    assert tok.token_to_id("a") is not None


def test_empty_corpus_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        train_tokenizer(iter([]), TokenizerConfig())
