"""word2vec shared by the word2vec feature and the word2vec_synonyms augmenter: the word regex,
a process-independent hash, and seeded single-threaded gensim training on a spooled corpus."""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from genloom.core.errors import MissingDependencyError

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
