"""Text vectorizers (tfidf, bag_of_words, one_hot, ngrams) and word2vec, on hand-checkable cases
and on real text, against scikit-learn run on the whole corpus."""

from __future__ import annotations

import math
import random
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from genloom.core.errors import ConfigError
from genloom.core.steps import StepContext
from genloom.features._vectorize import sparse_to_csr
from genloom.features.bag_of_words import BagOfWordsFeature
from genloom.features.ngrams import NgramsFeature
from genloom.features.one_hot import OneHotFeature
from genloom.features.tfidf import TfidfFeature

pytest.importorskip("sklearn")


def _table(texts: list[str | None], **columns: list) -> pa.Table:
    n = len(texts)
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": texts, **columns})


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def _fit_transform(step, table: pa.Table, batch: int):
    """Fit over ``batch``-row slices (a stream of shards), transform shard by shard; the CSR matrix."""
    state = step.fit(_batches(table, batch))
    out = pa.concat_tables([step.run_fitted(b, state, StepContext()) for b in _batches(table, batch)])
    return state, out, sparse_to_csr(out.column(step.output_column), step.n_columns(state))


def _same(a, b) -> bool:
    """Two sparse matrices with the same float32 values in the same places (bit for bit)."""
    a, b = a.tocsr().astype(np.float32), b.tocsr().astype(np.float32)
    a.sort_indices()
    b.sort_indices()
    return (
        a.shape == b.shape
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and a.data.tobytes() == b.data.tobytes()
    )


def test_tfidf_of_three_documents_by_hand() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = ["the cat sat", "the dog sat", "the cat ran"]
    step = TfidfFeature()
    state, out, m = _fit_transform(step, _table(docs), batch=1)  # fitted one document at a time
    assert state["vocabulary"] == ["cat", "dog", "ran", "sat", "the"]
    # idf = ln((1 + n) / (1 + df)) + 1 with n = 3: df 2 (cat, sat), 1 (dog, ran), 3 (the)
    idf2, idf1, idf3 = math.log(4 / 3) + 1, math.log(4 / 2) + 1, 1.0
    assert np.allclose(state["idf"], [idf2, idf1, idf1, idf2, idf3])
    # document 0 holds cat, sat, the once each: weights idf2, idf2, 1, then L2-normalised
    norm = math.sqrt(2 * idf2**2 + 1)
    row = out.column("tfidf")[0].as_py()
    assert row["indices"] == [0, 3, 4]
    assert row["values"] == pytest.approx([idf2 / norm, idf2 / norm, 1 / norm], abs=1e-7)
    assert row["values"] == pytest.approx([0.6198, 0.6198, 0.4813], abs=1e-4)
    assert out.column("tfidf")[1].as_py()["indices"] == [1, 3, 4]  # dog, sat, the
    # and it is scikit-learn's TfidfVectorizer on the whole corpus, bit for bit
    assert _same(m, TfidfVectorizer().fit_transform(docs))


def test_tfidf_vocabulary_limits_on_real_text_equal_sklearn(paragraphs: list[str]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = paragraphs[:400]
    options = {"min_df": 3, "max_df": 0.5, "max_features": 300, "sublinear_tf": True, "stop_words": "english"}
    step = TfidfFeature(**options)
    state, out, m = _fit_transform(step, _table(docs), batch=64)
    ref = TfidfVectorizer(**options)
    expected = ref.fit_transform(docs)
    assert state["vocabulary"] == ref.get_feature_names_out().tolist() and len(state["vocabulary"]) == 300
    assert np.array_equal(state["idf"], ref.idf_)
    assert _same(m, expected)
    assert out.schema.field("tfidf").type == pa.struct(
        [("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))]
    )
    # char n-grams with a share for min_df, fitted over different batch sizes: the same vocabulary
    from sklearn.feature_extraction.text import CountVectorizer

    grams = NgramsFeature(analyzer="char_wb", ngram_range=(2, 4), min_df=0.05)
    g_state, _, g = _fit_transform(grams, _table(docs[:120]), batch=50)
    g_ref = CountVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=0.05)
    assert _same(g, g_ref.fit_transform(docs[:120]))
    assert g_state["vocabulary"] == g_ref.get_feature_names_out().tolist()
    assert grams.fit([_table(docs[:120])])["vocabulary"] == g_state["vocabulary"]  # one batch: the same


def test_word_ngrams_counts_and_binary_bag_of_words() -> None:
    docs = ["New York is new", "York is old", None]
    step = NgramsFeature()  # word 1- and 2-grams, counts
    state, out, m = _fit_transform(step, _table(docs), batch=2)
    assert state["vocabulary"] == ["is", "is new", "is old", "new", "new york", "old", "york", "york is"]
    first = dict(zip(state["vocabulary"], m.toarray()[0], strict=True))
    assert first == {
        "is": 1,
        "is new": 1,
        "is old": 0,
        "new": 2,
        "new york": 1,
        "old": 0,
        "york": 1,
        "york is": 1,
    }
    assert out.column("ngrams")[2].as_py() == {"indices": [], "values": []}  # null text: empty vector

    bow = BagOfWordsFeature(binary=True)
    _, _, b = _fit_transform(bow, _table(docs), batch=1)
    assert b.toarray()[0].tolist() == [1, 1, 0, 1]  # is, new (twice, counted once), old, york

    # a token-list column (preprocess's tokens): used as given, lowercased
    tokens = [["New", "York", "is", "new"], ["York", "is", "old"], None]
    t_step = NgramsFeature(column="tokens", ngram_range=(1, 2))
    t_state, _, _ = _fit_transform(t_step, _table(docs, tokens=tokens), batch=3)
    assert t_state["vocabulary"] == state["vocabulary"]


def test_one_hot_of_a_categorical_column_and_of_tokens() -> None:
    labels = ["red", "green", None, "Red", "blue", "green"]
    step = OneHotFeature(mode="categorical", column="label", dense=True, output="colour")
    state, out, _ = step.fit([_table([""] * 6, label=labels)]), None, None
    out = step.run_fitted(_table([""] * 6, label=labels), state, StepContext())
    assert state["vocabulary"] == ["blue", "green", "red"]
    assert out.schema.field("colour").type == pa.list_(pa.float32(), 3)
    assert out.column("colour").to_pylist() == [
        [0, 0, 1],
        [0, 1, 0],
        [0, 0, 0],  # null: no category
        [0, 0, 1],  # lowercased
        [1, 0, 0],
        [0, 1, 0],
    ]
    unseen = step.run_fitted(_table([""], label=["purple"]), state, StepContext())
    assert unseen.column("colour").to_pylist() == [[0, 0, 0]]
    top = OneHotFeature(mode="categorical", column="label", max_features=2)
    assert top.fit([_table([""] * 6, label=labels)])["vocabulary"] == ["green", "red"]

    tokens = OneHotFeature()
    t_state = tokens.fit([_table(["spam spam eggs", "eggs ham"])])
    row = tokens.run_fitted(_table(["spam spam eggs"]), t_state, StepContext()).column("one_hot")[0].as_py()
    assert t_state["vocabulary"] == ["eggs", "ham", "spam"] and row == {
        "indices": [0, 2],
        "values": [1.0, 1.0],
    }


def test_hashing_tfidf_equals_sklearn_and_keeps_no_vocabulary(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    rng = random.Random(0)
    words = [f"w{i}" for i in range(50)]
    docs = [" ".join(rng.choices(words, k=12)) for _ in range(60)]
    step = TfidfFeature(hashing=True, n_features=256)
    state, out, m = _fit_transform(step, _table(docs), batch=16)
    assert state["vocabulary"] is None and state["idf"].shape == (256,)
    counts = HashingVectorizer(n_features=256, alternate_sign=False, norm=None).transform(docs)
    assert _same(m, TfidfTransformer().fit_transform(counts))
    # the state artifact round-trips (vocabulary JSON + idf.npy)
    fs = fsspec.filesystem("file")
    step.save_state(state, str(tmp_path), fs)
    assert (tmp_path / "idf.npy").is_file()
    loaded = step.load_state(str(tmp_path), fs)
    again = step.run_fitted(_table(docs), loaded, StepContext())
    assert again.column("tfidf").to_pylist() == out.column("tfidf").to_pylist()
    with pytest.raises(ConfigError, match="no vocabulary"):
        TfidfFeature(hashing=True, min_df=2).check("features.0")


def test_word2vec_similarity_on_a_tiny_corpus(tmp_path: Path) -> None:
    pytest.importorskip("gensim")
    from genloom.augment.word2vec_synonyms import Word2VecSynonymAugmenter
    from genloom.features.word2vec import Word2VecFeature

    rng = random.Random(1)
    royal, fruit = ["king", "queen", "prince"], ["apple", "banana", "cherry"]
    royal_templates = [
        "the {} rules the land",
        "a {} lives in the castle",
        "the {} wears a golden crown",
        "our {} speaks to the people",
    ]
    fruit_templates = [
        "i eat a ripe {}",
        "the {} is sweet and fresh",
        "she buys a {} at the market",
        "a {} grows on the tree",
    ]
    docs = []
    for _ in range(300):
        docs.append(rng.choice(royal_templates).format(rng.choice(royal)))
        docs.append(rng.choice(fruit_templates).format(rng.choice(fruit)))
    table = _table(docs)
    for algorithm in ("skipgram", "cbow"):
        step = Word2VecFeature(algorithm=algorithm, vector_size=16, window=3, min_count=2, epochs=30)
        wv = step.fit(_batches(table, 100))
        assert wv.similarity("king", "queen") > wv.similarity("king", "banana"), algorithm
        assert wv.similarity("apple", "cherry") > wv.similarity("apple", "prince"), algorithm
        # words used in the same contexts are each other's nearest neighbours
        assert {w for w, _ in wv.most_similar("king", topn=2)} == {"queen", "prince"}, algorithm
        assert {w for w, _ in wv.most_similar("banana", topn=2)} == {"apple", "cherry"}, algorithm
        assert np.array_equal(step.fit([table]).vectors, wv.vectors)  # seeded, single-threaded
    out = step.run_fitted(_table(["The Queen rules the land", "a sweet banana", "zzz"]), wv, StepContext())
    v = np.array(out.column("word2vec").to_pylist(), dtype=np.float32)
    assert out.column("word2vec_known").to_pylist() == [5, 3, 0] and not v[2].any()
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    royal_doc = np.array(wv["king"] + wv["castle"] + wv["crown"]) / 3
    assert cos(v[0], royal_doc) > cos(v[1], royal_doc)

    # the saved state (word2vec C binary) is the word vectors the synonym augmenter can reuse
    fs = fsspec.filesystem("file")
    step.save_state(wv, str(tmp_path), fs)
    augmenter = Word2VecSynonymAugmenter(
        model=str(tmp_path / "word2vec.bin"), skip_most_frequent=2, min_similarity=0.0, topn=2
    )
    near = augmenter.fit([])["neighbours"]
    assert set(near["queen"]) == {"king", "prince"}
    assert augmenter.files_read() == [str(tmp_path / "word2vec.bin")]
