"""Synonym replacement with word2vec neighbours trained on the corpus itself (any language)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.augment._common import WORD_RE, match_case, record_rng, selected
from genloom.core.errors import ConfigError, MissingDependencyError
from genloom.core.records import dump_meta, load_meta, records_to_table
from genloom.core.registry import AUGMENTERS
from genloom.core.steps import Fitted
from genloom.core.word2vec import train_word2vec, words


def _is_binary(path: str) -> bool:
    """Whether a word2vec file is in the C binary format (text formats: .txt, .vec)."""
    return not path.endswith((".txt", ".vec", ".txt.gz", ".vec.gz"))


@AUGMENTERS.register("word2vec_synonyms")
class Word2VecSynonymAugmenter(Fitted):
    """Add copies of records with words replaced by their nearest word2vec neighbours, learnt from the corpus.

    The fit trains gensim's skip-gram word2vec (Mikolov et al. 2013) on the lowercased words of the
    input (up to ``max_docs`` records; ``vector_size``, ``window``, ``min_count``, ``epochs``) and
    keeps, for the ``vocab_size`` most frequent words of 3+ letters (less the
    ``skip_most_frequent`` first, function words in any language), the ``topn`` neighbours with
    cosine similarity at least ``min_similarity``: that table is the state (JSON), so no WordNet
    and no language resources are needed. The transform adds ``n_aug`` copies of each record
    picked with ``ratio``, with a ``rate`` share of words (at least one) replaced by a random
    neighbour, case kept. It is a fitted step because the neighbours depend on the whole corpus.
    Neighbours are distributional: they are often related words rather than true synonyms
    (antonyms too), so keep ``rate`` low. Training is single-threaded and seeded, so results are
    deterministic for a ``seed``. New records get ``meta.augmented_from`` and
    ``meta.augmentation: word2vec_synonyms``.
    """

    type: Literal["word2vec_synonyms"] = "word2vec_synonyms"
    column: str = "text"
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    n_aug: int = Field(default=1, ge=1)
    rate: float = Field(default=0.1, gt=0.0, le=1.0)
    seed: int = 0
    vector_size: int = 100
    window: int = 5
    min_count: int = 5
    epochs: int = 5
    vocab_size: int = 20_000
    #: the most frequent words are function words in any language: never replaced nor used
    skip_most_frequent: int = 100
    topn: int = 5
    min_similarity: float = 0.5
    max_docs: int = 500_000
    model: str | None = Field(
        None,
        description="Word vectors to take the neighbours from instead of training: a word2vec file "
        "(C binary .bin, e.g. the word2vec feature's state artifact word2vec.bin, or text .txt/.vec)",
    )

    requires: ClassVar[tuple[str, ...]] = ("gensim",)
    extra: ClassVar[str] = "nlp"

    def check(self, path: str) -> None:
        if self.model is not None and not os.path.isfile(self.resolve_path(self.model)):
            raise ConfigError(
                f"word vectors file {self.model!r} does not exist",
                path=f"{path}.model",
                hint="give a word2vec file (the word2vec feature's word2vec.bin), or leave model out to train",
            )

    def files_read(self) -> list[str]:
        return [self.model] if self.model else []

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        if self.model is not None:
            try:
                from gensim.models import KeyedVectors
            except ImportError as e:
                raise MissingDependencyError("gensim", "pip install 'genloom[nlp]'") from e
            path = self.resolve_path(self.model)
            return {
                "neighbours": self.neighbours(
                    KeyedVectors.load_word2vec_format(path, binary=_is_binary(path))
                )
            }
        texts = (text for t in tables for text in t.column(self.column).to_pylist())
        model = train_word2vec(
            (words(t) for t in texts if t),
            sg=True,
            vector_size=self.vector_size,
            window=self.window,
            min_count=self.min_count,
            epochs=self.epochs,
            seed=self.seed,
            max_docs=self.max_docs,
        )
        if model is None:
            return {"neighbours": {}}
        return {"neighbours": self.neighbours(model.wv)}

    def neighbours(self, wv: Any) -> dict[str, list[str]]:
        """The replacement table: for the frequent words of gensim ``KeyedVectors`` ``wv`` (the
        ``skip_most_frequent`` first left out), their close neighbours."""
        neighbours: dict[str, list[str]] = {}
        frequent = set(wv.index_to_key[: self.skip_most_frequent])
        for word in wv.index_to_key[self.skip_most_frequent : self.vocab_size]:
            if len(word) < 3 or not word.isalpha():
                continue
            near = [
                w
                for w, s in wv.most_similar(word, topn=self.topn + 5)
                if s >= self.min_similarity and w.isalpha() and w not in frequent
            ][: self.topn]
            if near:
                neighbours[word] = near
        return neighbours

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        near: dict[str, list[str]] = state["neighbours"]
        if not near:
            return table
        new: list[dict[str, Any]] = []
        for rec in table.to_pylist():
            text = rec.get(self.column)
            if not text or not selected(self.seed, rec["id"], self.ratio, self.type):
                continue
            spans = [(m.start(), m.end()) for m in WORD_RE.finditer(text)]
            options = [(a, b) for a, b in spans if text[a:b].lower() in near]
            if not options:
                continue
            for k in range(self.n_aug):
                rng = record_rng(self.seed, rec["id"], k, self.type)
                n = max(1, round(self.rate * len(spans)))
                chosen = sorted(rng.sample(range(len(options)), min(n, len(options))))
                pieces, pos = [], 0
                for i in chosen:
                    a, b = options[i]
                    pieces += [text[pos:a], match_case(rng.choice(near[text[a:b].lower()]), text[a:b])]
                    pos = b
                pieces.append(text[pos:])
                meta = {**load_meta(rec.get("meta")), "augmented_from": rec["id"], "augmentation": self.type}
                new.append(
                    {
                        **rec,
                        self.column: "".join(pieces),
                        "id": f"{rec['id']}#{self.type}{k}",
                        "meta": dump_meta(meta),
                    }
                )
        if not new:
            return table
        return pa.concat_tables([table, records_to_table(new, schema=table.schema)])
