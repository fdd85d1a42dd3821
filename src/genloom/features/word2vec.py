"""word2vec trained on the corpus (gensim; skip-gram or CBOW): a mean word vector per record."""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import MissingDependencyError, StepError
from genloom.core.registry import FEATURES
from genloom.core.steps import Fitted
from genloom.features._vectorize import write_column

#: words: letters/digits with inner apostrophes or hyphens (any script), as the augmenters split them
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (gensim seeds word vectors with it)."""
    return zlib.crc32(text.encode("utf-8"))


def words(text: str | None, lowercase: bool = True) -> list[str]:
    """The words of ``text`` (``WORD_RE``), lowercased if asked."""
    found = WORD_RE.findall(text or "")
    return [w.lower() for w in found] if lowercase else found


class SpooledSentences:
    """Token lists written once to a temporary file and read back for every training epoch.

    gensim iterates a corpus once for the vocabulary and once per epoch, while a fit sees its
    input once (a stream of shards): spooling keeps memory flat whatever the corpus size, and
    reading it back gives exactly the lists that were written (words hold no spaces).
    """

    def __init__(self, sentences: Iterable[list[str]], max_docs: int | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="genloom-w2v-", suffix=".txt")
        self.count = 0
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for tokens in sentences:
                if max_docs is not None and self.count >= max_docs:
                    break
                f.write(" ".join(tokens) + "\n")
                self.count += 1

    def __iter__(self) -> Iterator[list[str]]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                yield line.split(" ") if line else []

    def close(self) -> None:
        """Delete the temporary file."""
        if os.path.exists(self.path):
            os.remove(self.path)


def train_word2vec(
    sentences: Iterable[list[str]],
    *,
    sg: bool,
    vector_size: int,
    window: int,
    min_count: int,
    epochs: int,
    seed: int,
    max_docs: int | None = None,
) -> Any:
    """gensim ``Word2Vec`` trained on ``sentences`` (read once, spooled to disk), single-threaded and
    seeded with a process-independent hash: the same vectors for the same corpus and ``seed``.
    Returns None when no sentence holds a word seen ``min_count`` times."""
    try:
        from gensim.models import Word2Vec
    except ImportError as e:
        raise MissingDependencyError("gensim", "pip install 'genloom[features]'") from e
    spool = SpooledSentences(sentences, max_docs)
    try:
        if spool.count == 0:
            return None
        model = Word2Vec(
            vector_size=vector_size,
            window=window,
            min_count=min_count,
            sg=int(sg),
            epochs=epochs,
            workers=1,
            seed=seed,
            hashfxn=stable_hash,
        )
        model.build_vocab(spool)
        if not model.wv.index_to_key:
            return None
        model.train(spool, total_examples=model.corpus_count, epochs=model.epochs)
        return model
    finally:
        spool.close()


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
