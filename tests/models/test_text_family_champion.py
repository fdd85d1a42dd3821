"""The champion's evaluation streams the held-out texts and packs only those its scored tokens need."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genloom.models.text_family import evaluate_on_texts, evaluate_text_model
from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import pack_tokens
from genloom.train.config import TrainConfig
from genloom.train.loop import train

pytest.importorskip("torch")


def test_champion_scores_the_same_tokens_from_a_stream_and_stops_early(tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone"]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) for _ in range(1100)]
    tok = train_tokenizer(iter(docs[:100]), TokenizerConfig(vocab_size=300))
    model = tmp_path / "model"
    model.mkdir()
    tok.save(str(model / "tokenizer.json"))
    pack_tokens(tok, docs[:100], tmp_path / "train.bin")
    pack_tokens(tok, docs[100:], tmp_path / "val.bin")
    cfg = TrainConfig(model={"type": "gpt", "preset": "tiny", "block_size": 32}, max_steps=1, batch_size=4)
    train(cfg.model_copy(update={"precision": "fp32"}), tmp_path / "train.bin", tmp_path / "val.bin", model)

    max_tokens = 500
    full = evaluate_text_model(model, tmp_path / "val.bin", max_tokens)  # every text packed (the old way)
    read: list[str] = []

    def stream():
        for t in docs[100:]:
            read.append(t)
            yield t

    part = evaluate_on_texts(model, stream(), max_tokens)
    assert part["val_tokens"] == full["val_tokens"] == max_tokens
    assert part["val_loss"] == full["val_loss"] and part["val_ppl"] == full["val_ppl"]
    assert len(read) == 256  # one batch of texts covers the scored tokens (1,000 held out)
    assert 0 < part["val_bpc"] < 20
    everything = evaluate_on_texts(model, iter(docs[100:]), None)
    assert everything["val_tokens"] == evaluate_text_model(model, tmp_path / "val.bin")["val_tokens"]

    # the family's evaluate_champion reads val_texts.parquet in batches, to the same figures
    from genloom.models.base import family_of

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    pq.write_table(pa.table({"text": docs[100:]}), prepared / "val_texts.parquet", row_group_size=50)
    metrics = family_of(model).evaluate_champion(
        model, prepared, SimpleNamespace(max_tokens=max_tokens, samples=0)
    )
    assert metrics["val_loss"].value == full["val_loss"] and metrics["val_tokens"].value == max_tokens
