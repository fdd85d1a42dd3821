"""Features computed on four shards in a process pool (the real features stage and the local
executor) equal the same steps run in one process on the whole corpus as one table: bit for bit
for TF-IDF, bag of words, n-grams, one-hot and word2vec; within 1e-5 (absolute) for the sentence
embeddings, whose float sums change with the padding of the batch a text lands in. The encoder is
a tiny local BERT (2 layers, 32 dimensions) so the workers start fast; MiniLM itself is checked in
test_embeddings.py."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.conftest import write_pipeline
from tests.features.test_embeddings import save_tiny_encoder

from genloom.core.config import load_config
from genloom.core.steps import Fitted, StepContext
from genloom.pipeline import Pipeline

pytest.importorskip("sklearn")
pytest.importorskip("gensim")

SUBJECTS = ["the cat", "a dog", "my neighbour", "the old king", "our teacher", "the pilot", "a small bird"]
VERBS = ["sees", "likes", "paints", "follows", "ignores", "feeds", "visits"]
OBJECTS = [
    "the river",
    "a red apple",
    "the market",
    "an empty house",
    "the garden",
    "a tall tower",
    "the sea",
]
TAILS = [
    "today.",
    "every morning.",
    "in the rain.",
    "with great care.",
    "again!",
    "before dinner.",
    "quietly.",
]

FEATURES = [
    {"type": "tfidf", "min_df": 2, "max_df": 0.9, "max_features": 60},
    {"type": "bag_of_words", "binary": True},
    {
        "type": "ngrams",
        "analyzer": "char_wb",
        "ngram_range": [2, 3],
        "weighting": "tfidf",
        "max_features": 300,
    },
    {
        "type": "one_hot",
        "mode": "categorical",
        "column": "subject",
        "max_features": 5,
        "output": "subject_1h",
    },
    {"type": "tfidf", "hashing": True, "n_features": 1024, "output": "tfidf_hashed"},
    {"type": "word2vec", "vector_size": 16, "min_count": 2, "epochs": 2, "algorithm": "cbow"},
    {"type": "embeddings", "model": "encoder", "batch_size": 16},
]
EXACT = ["tfidf", "bag_of_words", "ngrams", "subject_1h", "tfidf_hashed", "word2vec", "word2vec_known"]


def _corpus(tmp: Path) -> None:
    """Four TSV files (one shard each) of generated sentences, some repeated across files."""
    rng = random.Random(3)
    (tmp / "data").mkdir(parents=True)
    for f in range(4):
        rows = []
        for _ in range(40):
            subject = rng.choice(SUBJECTS)
            text = " ".join([subject, rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)])
            rows.append(f"{text}\t{subject.split()[-1]}")
        (tmp / "data" / f"part{f}.tsv").write_text(
            "text\tsubject\n" + "\n".join(rows) + "\n", encoding="utf-8"
        )


def _by_id(table: pa.Table) -> pa.Table:
    return table.take(np.argsort(np.array(table.column("id").to_pylist())))


def test_four_shards_in_a_pool_equal_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    _corpus(folder)
    save_tiny_encoder(folder / "encoder")
    path = write_pipeline(
        folder,
        sources=[{"type": "csv", "paths": ["data"], "delimiter": "\t", "text_column": "text"}],
        clean=[],
        preprocess=[],
        features=FEATURES,
        data={"partitions_per_shard": 1},
        executor={"type": "local", "workers": 2},
    )
    pipe = Pipeline.from_file(path)
    summary = pipe.run()
    assert summary.status == "succeeded"
    plans = {p.stage: p for p in pipe.plan()}
    manifest = pipe.store.read_manifest("features", plans["features"].key)
    assert len(manifest["shards"]) == 4
    pooled = _by_id(pa.concat_tables(pipe.iter_dataset("features")))

    # the same steps in this process, on the ingested corpus as one table (in its order: word2vec
    # learns from the sentences in the order it reads them)
    whole = pa.concat_tables(pipe.iter_dataset("ingest"))
    ctx = StepContext()
    for step in load_config(path).features:
        step.bind(folder)
        if isinstance(step, Fitted):
            state = step.fit([whole])
            whole = step.run_fitted(whole, state, ctx)
        else:
            whole = step.run(whole, ctx)
    whole = _by_id(whole)

    assert pooled.num_rows == whole.num_rows == 160
    for name in EXACT:
        assert pooled.column(name).to_pylist() == whole.column(name).to_pylist(), name
    assert pooled.schema.field("tfidf").type == pa.struct(
        [("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))]
    )
    a = np.array(pooled.column("embedding").to_pylist(), dtype=np.float32)
    b = np.array(whole.column("embedding").to_pylist(), dtype=np.float32)
    assert a.shape == (160, 32)
    assert np.abs(a - b).max() < 1e-5
