"""The vectorizers' fit counted shard by shard (``fit_shard`` then ``merge_fits``, as the features
stage runs it in its worker pool) equals the fit of the whole corpus, and the transform that maps
the fit's saved counts of a batch to the vocabulary equals tokenizing the batch again, bit for bit."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from genloom.core.steps import StepContext
from genloom.features._vectorize import VectorizerStep, sparse_to_csr
from genloom.features.bag_of_words import BagOfWordsFeature
from genloom.features.ngrams import NgramsFeature
from genloom.features.one_hot import OneHotFeature
from genloom.features.tfidf import TfidfFeature

pytest.importorskip("sklearn")

STEPS = [
    TfidfFeature(min_df=2, max_df=0.8, max_features=400),
    BagOfWordsFeature(binary=True),
    NgramsFeature(analyzer="char_wb", ngram_range=(2, 3), weighting="tfidf", max_features=500),
    NgramsFeature(column="tokens", ngram_range=(1, 2)),
    OneHotFeature(mode="categorical", column="label"),
    TfidfFeature(hashing=True, n_features=512),
]


def _shards(paragraphs: list[str]) -> list[list[pa.Table]]:
    """Three shards of two or three batches each, with null text, a token column and labels."""
    docs: list[str | None] = list(paragraphs[:150])
    docs[7] = None
    docs[40] = ""
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(len(docs))],
            "text": docs,
            "tokens": [(d or "").split()[:30] for d in docs],
            "label": [("a", "b", "c", None)[i % 4] for i in range(len(docs))],
        }
    )
    cuts = [(0, 20), (20, 55), (55, 60), (60, 100), (100, 150)]
    batches = [table.slice(a, b - a) for a, b in cuts]
    return [batches[:2], batches[2:4], batches[4:]]


def _csr(step: VectorizerStep, batches: list[pa.Table], state: dict) -> list:
    out = [step.run_fitted(b, state, StepContext()) for b in batches]
    return [sparse_to_csr(t.column(step.output_column), step.n_columns(state)) for t in out]


def _equal(a, b) -> bool:
    return (
        a.shape == b.shape
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and a.data.tobytes() == b.data.tobytes()
    )


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"{s.type}-{s.column}-{s.hashing}")
def test_shard_counts_merged_equal_the_whole_fit_and_reused_counts_equal_tokenizing(
    step: VectorizerStep, paragraphs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = _shards(paragraphs)
    batches = [b for shard in shards for b in shard]
    whole = step.fit(batches)
    fs = fsspec.filesystem("file")
    scratch = str(tmp_path / "state")
    fs.makedirs(scratch)
    parts = [step.fit_shard(shard, scratch, fs) for shard in reversed(shards)]  # any order
    merged = step.merge_fits(parts)
    assert merged["vocabulary"] == whole["vocabulary"]
    if "idf" in whole:
        assert np.array_equal(merged["idf"], whole["idf"])
    step.save_state(merged, scratch, fs)
    saved = sorted((tmp_path / "state" / "counts").iterdir())
    assert len(saved) == len(batches)  # one count matrix per batch, named by its input's digest

    expected = _csr(step, batches, whole)  # no scratch: every batch tokenized
    # the loaded state finds the fit's counts: the text is not tokenized again
    loaded = step.load_state(scratch, fs)
    with monkeypatch.context() as m:
        m.setattr(type(step), "_documents", lambda *a: pytest.fail("tokenized again"))
        reused = _csr(step, batches, loaded)
    assert all(_equal(a, b) for a, b in zip(reused, expected, strict=True))
    assert not any(p.exists() for p in saved)  # each served its one transform

    # counts saved for other text are not used for this text: it is tokenized
    again = step.load_state(scratch, fs)
    step.fit_shard([batches[0]], scratch, fs)
    changed = batches[0].set_column(
        1, "text", pa.array([(t or "") + " extra" for t in batches[0]["text"].to_pylist()])
    )
    assert _equal(_csr(step, [changed], again)[0], _csr(step, [changed], whole)[0])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm": "l1", "sublinear_tf": True},
        {"norm": None, "smooth_idf": False},
        {"use_idf": False},
        {"stop_words": ["the", "and", "of"], "lowercase": False},
    ],
)
def test_one_regex_pass_and_numpy_weighting_equal_tfidf_vectorizer(
    options: dict, paragraphs: list[str]
) -> None:
    """The default word analyzer cuts a batch in one pass over its joined texts, and the TF-IDF
    weighting and row norms are computed with NumPy: both equal scikit-learn bit for bit, also on
    text with a NUL (cut text by text), capitals that lower to two characters and Greek sigmas."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = list(paragraphs[:200]) + [
        "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΟΦΙΑΣ ΛΟΓΟΣ",
        "İSTANBUL and İzmir İİ",
        "a\x00null byte\x00inside",
        "",
        "x",
        "a b_c 9 z9 __ _ é e\u0301te x_y I'm co-op ½½ ٣٤ 一二",  # one-character runs, marks, digits
    ]
    table = pa.table({"id": [f"r{i}" for i in range(len(docs))], "text": docs})
    batches = [table.slice(i, 37) for i in range(0, table.num_rows, 37)]
    step = TfidfFeature(**options)
    state = step.fit(batches)
    got = _csr(step, batches, state)
    ref = TfidfVectorizer(**options).fit(docs)
    assert state["vocabulary"] == ref.get_feature_names_out().tolist()
    expected = ref.transform(docs).astype(np.float32).tocsr()
    expected.sort_indices()
    from scipy import sparse

    assert _equal(sparse.vstack(got).tocsr(), expected)
