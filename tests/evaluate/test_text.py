"""Held-out loss and bits per character of a trained model folder."""

from __future__ import annotations

import math
from pathlib import Path

from genloom.evaluate.text import evaluate_text_model
from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import pack_tokens
from genloom.train.config import TrainConfig
from genloom.train.loop import train


def test_bits_per_character_and_determinism(tmp_path: Path) -> None:
    docs = [f"line {i % 7} of the text, more or less.\n" * 3 for i in range(200)]
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind="char"))
    out = tmp_path / "model"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:180], tmp_path / "train.bin")
    meta = pack_tokens(tok, docs[180:], tmp_path / "val.bin")
    train(
        TrainConfig(model={"type": "gpt", "preset": "tiny", "block_size": 32}, max_steps=20, batch_size=4),
        tmp_path / "train.bin",
        tmp_path / "val.bin",
        out,
    )
    a = evaluate_text_model(out, tmp_path / "val.bin")
    b = evaluate_text_model(out, tmp_path / "val.bin")
    assert a == b
    assert a["val_tokens"] == meta["n_tokens"] - 1  # every token but the first, once
    # char tokens: one per character, plus one end-of-document token per document
    assert math.isclose(a["val_bpc"], a["val_loss"] / math.log(2) * meta["n_tokens"] / meta["n_chars"])
    assert math.isclose(a["val_ppl"], math.exp(a["val_loss"]))
    part = evaluate_text_model(out, tmp_path / "val.bin", max_tokens=100)
    assert part["val_tokens"] == 100
