"""Tokenizers trained on the corpus with Hugging Face ``tokenizers``: byte-level BPE, or characters.

Special tokens come first in the vocabulary, in a fixed order, so that their ids are stable:
``<|endoftext|>`` separates documents, ``<|pad|>`` pads batches, chat roles mark turns, and
control tokens (``<|sentiment=positive|>``) condition generation on a record's fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from genloom.core.errors import ConfigError

if TYPE_CHECKING:
    import tokenizers

EOD = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
CHAT_ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|end|>"
# the special tokens every genloom tokenizer has, in id order
BASE_SPECIAL_TOKENS = [EOD, PAD, *(f"<|{r}|>" for r in CHAT_ROLES), END_OF_TURN]


class TokenizerConfig(BaseModel):
    """How the text tokenizer is trained (the ``tokenizer:`` part of the train stage)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["bpe", "char"] = Field(
        "bpe",
        description="bpe: byte-level BPE (any text, any size); char: one token per character (tiny corpora).",
    )
    vocab_size: int | None = Field(
        None,
        ge=64,
        le=1 << 20,
        description="BPE vocabulary size; None picks one from the corpus size (about sqrt(chars)).",
    )
    min_frequency: int = Field(2, ge=1, description="A BPE merge needs a pair seen at least this many times.")
    max_chars: int | None = Field(
        None,
        ge=1,
        description="Train the tokenizer on at most this many characters of the corpus (None: all).",
    )
    control_tokens: list[str] = Field(
        default_factory=list,
        description="Extra special tokens, such as control tokens made with control_token('sentiment', 'positive').",
    )


def control_token(key: str, value: object) -> str:
    """The control token for one field value: ``<|key=value|>``."""
    return f"<|{key}={value}|>"


def format_controls(controls: dict[str, str] | None) -> str:
    """The control tokens that prefix a document, in sorted key order (training and generation agree)."""
    return "".join(control_token(k, v) for k, v in sorted((controls or {}).items()))


def format_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """A conversation as text: ``<|user|>hi<|end|>\\n<|assistant|>hello<|end|>\\n``."""
    out = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in CHAT_ROLES:
            raise ConfigError(
                f"unknown chat role {role!r}", path=f"messages.{i}.role", hint=f"use one of {CHAT_ROLES}"
            )
        out.append(f"<|{role}|>{m.get('content', '')}{END_OF_TURN}\n")
    if add_generation_prompt:
        out.append("<|assistant|>")
    return "".join(out)


# the same template in Jinja, for Hugging Face exports (tokenizer_config.json's chat_template)
CHAT_TEMPLATE_JINJA = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def default_vocab_size(n_chars: int) -> int:
    """A BPE vocabulary for a corpus of ``n_chars`` characters: the power of two nearest sqrt(n_chars), 512..32768.

    Small corpora want small vocabularies: every embedding row must be learned from the data.
    """
    return int(min(32768, max(512, 2 ** round(math.log2(max(n_chars, 1) ** 0.5)))))


def _special_tokens(cfg: TokenizerConfig) -> list[str]:
    extra = [t for t in cfg.control_tokens if t not in BASE_SPECIAL_TOKENS]
    return [*BASE_SPECIAL_TOKENS, *dict.fromkeys(extra)]


def _limited(texts: Iterable[str], max_chars: int | None, counter: list[int]) -> Iterator[str]:
    """Yields texts (cut at ``max_chars`` in total) and counts their characters in ``counter[0]``."""
    for t in texts:
        if max_chars is not None and counter[0] + len(t) > max_chars:
            t = t[: max_chars - counter[0]]
        counter[0] += len(t)
        if t:
            yield t
        if max_chars is not None and counter[0] >= max_chars:
            return


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> tokenizers.Tokenizer:
    """Trains a tokenizer on ``texts``, streamed once (a corpus larger than memory is fine)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = _special_tokens(cfg)
    counter = [0]
    stream = _limited(texts, cfg.max_chars, counter)
    if cfg.kind == "char":
        chars: dict[str, int] = {}
        for t in stream:
            for ch in set(t):
                chars[ch] = chars.get(ch, 0) + 1
        vocab = {tok: i for i, tok in enumerate([*specials, UNK])}
        for ch in sorted(chars):
            vocab.setdefault(ch, len(vocab))
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size or 32768,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(stream, trainer=trainer)
        if cfg.vocab_size is None:
            tok = _truncate_bpe(tok, default_vocab_size(counter[0]))
    if counter[0] == 0:
        raise ConfigError(
            "the tokenizer has no text to learn from", path="train.tokenizer", hint="check the data stages"
        )
    tok.add_special_tokens(specials)
    return tok


def _truncate_bpe(tok: tokenizers.Tokenizer, vocab_size: int) -> tokenizers.Tokenizer:
    """Keeps the first ``vocab_size`` ids: BPE learns merges greedily, so this equals training with that size."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    model = spec["model"]
    if len(model["vocab"]) <= vocab_size:
        return tok
    model["vocab"] = {t: i for t, i in model["vocab"].items() if i < vocab_size}
    keep = set(model["vocab"])
    model["merges"] = [m for m in model["merges"] if _merged(m) in keep]
    return Tokenizer.from_str(json.dumps(spec))


def _merged(merge: str | list[str]) -> str:
    a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
    return a + b


# end-of-sequence tokens of common Hugging Face tokenizers, for fine-tuning their models
FOREIGN_EOS = ("</s>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>", "[SEP]")


def eod_id(tok: tokenizers.Tokenizer) -> int:
    """The id of the end-of-document token (genloom's, else the end-of-sequence token of a HF tokenizer)."""
    for name in (EOD, *FOREIGN_EOS):
        i = tok.token_to_id(name)
        if i is not None:
            return int(i)
    raise ConfigError(
        "the tokenizer has no end-of-document token", hint=f"train it with genloom ({EOD}) or add </s>"
    )
