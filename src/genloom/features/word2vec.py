"""word2vec trained on the corpus (gensim; skip-gram or CBOW): a mean word vector per record."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import MissingDependencyError, StepError
from genloom.core.registry import FEATURES
from genloom.core.steps import Fitted
from genloom.core.word2vec import WORD_RE, SpooledSentences, stable_hash, train_word2vec, words
from genloom.features._vectorize import write_column

__all__ = [
    "WORD_RE",
    "SpooledSentences",
    "Word2VecFeature",
    "load_vectors",
    "stable_hash",
    "train_word2vec",
    "words",
]


@FEATURES.register("word2vec")
class Word2VecFeature(Fitted):
    """Add the mean word2vec vector of each record's words (column ``word2vec``:
    ``fixed_size_list<float32>[vector_size]``), with word vectors trained on the corpus itself.

    The fit streams the lowercased words of ``column`` (the augmenters' word regex: any script)
    to a temporary file in one pass, then trains gensim's word2vec (Mikolov et al. 2013):
    ``algorithm: skipgram`` (predict the context from a word; better for rare words) or ``cbow``
    (predict a word from its context; faster), ``vector_size``, ``window``, ``min_count``,
    ``epochs``. Training is single-threaded with a seeded, process-independent hash, so the
    vectors are the same for the same corpus and ``seed``. The state artifact is the word vectors
    in the word2vec C binary format (``word2vec.bin``, loadable by gensim's
    ``KeyedVectors.load_word2vec_format(path, binary=True)`` and by the ``word2vec_synonyms``
    augmenter's ``model`` option). The transform averages the vectors of a record's words in the
    vocabulary; a record with none gets a zero vector (``word2vec_known``, int32, counts the words
    that were found). Drops nothing.
    """

    type: Literal["word2vec"] = "word2vec"
    column: str = Field("text", description="Input text column")
    output: str | None = Field(None, description="Output column name (default: word2vec)")
    algorithm: Literal["skipgram", "cbow"] = Field("skipgram", description="skipgram (sg=1) or cbow (sg=0)")
    vector_size: int = Field(100, ge=1, description="Dimensions of the word vectors")
    window: int = Field(5, ge=1, description="Largest distance between a word and its context words")
    min_count: int = Field(5, ge=1, description="Ignore words seen fewer times in the corpus")
    epochs: int = Field(5, ge=1, description="Passes over the corpus")
    seed: int = Field(0, description="Seed of the initial vectors and sampling")
    lowercase: bool = Field(True, description="Lowercase words before training and lookup")
    max_docs: int | None = Field(None, ge=1, description="Train on at most this many records (all: null)")

    requires: ClassVar[tuple[str, ...]] = ("gensim",)
    extra: ClassVar[str] = "features"

    @property
    def output_column(self) -> str:
        """The column the step writes."""
        return self.output or self.type

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        def sentences() -> Iterator[list[str]]:
            for table in tables:
                for text in table.column(self.column).to_pylist():
                    if text:
                        yield words(text, self.lowercase)

        model = train_word2vec(
            sentences(),
            sg=self.algorithm == "skipgram",
            vector_size=self.vector_size,
            window=self.window,
            min_count=self.min_count,
            epochs=self.epochs,
            seed=self.seed,
            max_docs=self.max_docs,
        )
        if model is None:
            raise StepError(
                f"no word of column {self.column!r} occurs min_count={self.min_count} times: "
                "nothing to train word2vec on (lower min_count, or check the input)",
                component=self.type,
            )
        return model.wv

    def save_state(self, state: Any, path: str, fs: Any) -> None:
        fd, tmp = tempfile.mkstemp(suffix=".bin")
        os.close(fd)
        try:
            state.save_word2vec_format(tmp, binary=True)
            fs.put_file(tmp, f"{path}/word2vec.bin")
        finally:
            os.remove(tmp)

    def load_state(self, path: str, fs: Any) -> Any:
        return load_vectors(f"{path}/word2vec.bin", fs)

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        dim = state.vector_size
        texts = table.column(self.column).to_pylist()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        known = np.zeros(len(texts), dtype=np.int32)
        index = state.key_to_index
        for i, text in enumerate(texts):
            rows = [index[w] for w in words(text, self.lowercase) if w in index]
            if rows:
                out[i] = state.vectors[rows].mean(axis=0, dtype=np.float32)
                known[i] = len(rows)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1), pa.float32()), dim)
        table = write_column(table, self.output_column, vectors)
        return write_column(table, f"{self.output_column}_known", pa.array(known, pa.int32()))


def load_vectors(path: str, fs: Any = None) -> Any:
    """gensim ``KeyedVectors`` from a word2vec C binary file (local, or on fsspec filesystem ``fs``)."""
    try:
        from gensim.models import KeyedVectors
    except ImportError as e:
        raise MissingDependencyError("gensim", "pip install 'genloom[features]'") from e
    if fs is None:
        return KeyedVectors.load_word2vec_format(path, binary=True)
    fd, tmp = tempfile.mkstemp(suffix=".bin")
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        return KeyedVectors.load_word2vec_format(tmp, binary=True)
    finally:
        os.remove(tmp)
