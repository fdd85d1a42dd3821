"""LDA topics (Blei, Ng & Jordan 2003), fitted by online variational Bayes (Hoffman et al. 2010) over the shards."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.core.steps import Fitted
from genloom.core.text_columns import write_column
from genloom.features._text import WORD_RE


@FEATURES.register("topics")
class TopicsFeature(Fitted):
    """Topics with LDA: each record's topic distribution in ``<output>`` and its likeliest topic in ``label_column``.

    Words are lower-cased runs of letters and digits (inner apostrophes and hyphens kept) of at
    least ``min_word_length`` characters, English stop words left out (``stop_words: english``,
    scikit-learn's list; ``none``; or a list). The fit reads the shards once, in order, counting
    words into a sparse matrix per batch of ``batch_rows`` records (about 12 bytes per distinct
    word of a record, kept in memory); then it keeps the words that are in at least ``min_df``
    records and at most a ``max_df`` fraction of them (the ``max_features`` most frequent of
    those) and runs scikit-learn's online LDA (Hoffman et al.'s online variational Bayes,
    ``random_state: seed``), one ``partial_fit`` per batch, ``passes`` times over the batches.
    Batches are cut by record count, not by shard, so the fit is the same for the same records,
    seed and options whatever the sharding. The state keeps the vocabulary, the topic-word matrix
    (``components.npy``) and each topic's ``top_words`` most probable words with their weights.
    ``<output>`` is a ``fixed_size_list<float32>[n_topics]`` summing to 1 (scikit-learn's
    ``transform``: the E-step with the topics fixed); ``label_column`` (default ``topic``) is its
    argmax as a string ("0", "1", ...), usable as a control (``train.controls: [topic]``) and by
    ``balance``. Records with no counted word get nulls.
    """

    type: Literal["topics"] = "topics"
    column: str = Field("text", description="The text column")
    output: str = Field("topics", description="Column of the topic distribution")
    label_column: str = Field("topic", description="Column of the likeliest topic (a string)")
    n_topics: int = Field(10, ge=2, description="Number of topics")
    stop_words: Literal["english", "none"] | list[str] = Field(
        "english", description="english (scikit-learn's list), none, or a list of words"
    )
    min_word_length: int = Field(3, ge=1, description="Shorter words are left out")
    min_df: int = Field(2, ge=1, description="A word must be in at least this many records")
    max_df: float = Field(
        0.5, gt=0, le=1, description="A word in more than this fraction of records is left out"
    )
    max_features: int = Field(20_000, ge=2, description="At most this many words (the most frequent)")
    passes: int = Field(10, ge=1, description="Online LDA passes over the batches")
    batch_rows: int = Field(1024, ge=1, description="Records per partial_fit step")
    doc_topic_prior: float | None = Field(None, gt=0, description="Dirichlet alpha (None: 1 / n_topics)")
    topic_word_prior: float | None = Field(None, gt=0, description="Dirichlet eta (None: 1 / n_topics)")
    learning_decay: float = Field(0.7, gt=0.5, le=1, description="kappa of the online learning rate")
    learning_offset: float = Field(10.0, gt=0, description="tau0 of the online learning rate")
    top_words: int = Field(10, ge=1, description="Words kept per topic in the state")
    seed: int = Field(0, description="Random state of the LDA")

    extra: ClassVar[str] = "features"
    requires: ClassVar[tuple[str, ...]] = ("sklearn", "scipy")

    def _stop(self) -> frozenset[str]:
        if self.stop_words == "none":
            return frozenset()
        if self.stop_words == "english":
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            return frozenset(ENGLISH_STOP_WORDS)
        return frozenset(w.lower() for w in self.stop_words)

    def words(self, text: str | None, stop: frozenset[str]) -> list[str]:
        """The words of one text that the model counts."""
        if not text:
            return []
        return [
            w
            for w in (m.lower() for m in WORD_RE.findall(text))
            if len(w) >= self.min_word_length and w not in stop
        ]

    def counts(self, texts: list[str | None], vocab: dict[str, int], grow: bool) -> Any:
        """The (records, len(vocab)) CSR matrix of word counts; with ``grow`` new words join ``vocab``."""
        from scipy.sparse import csr_matrix

        stop = self._stop()
        indptr, indices, data = [0], [], []
        for text in texts:
            row: dict[int, int] = {}
            for w in self.words(text, stop):
                j = vocab.get(w)
                if j is None:
                    if not grow:
                        continue
                    j = vocab[w] = len(vocab)
                row[j] = row.get(j, 0) + 1
            for j in sorted(row):
                indices.append(j)
                data.append(row[j])
            indptr.append(len(indices))
        return csr_matrix(
            (np.array(data, np.float64), np.array(indices, np.int64), np.array(indptr, np.int64)),
            shape=(len(texts), len(vocab)),
        )

    def _model(self, total_samples: int) -> Any:
        from sklearn.decomposition import LatentDirichletAllocation

        return LatentDirichletAllocation(
            n_components=self.n_topics,
            doc_topic_prior=self.doc_topic_prior,
            topic_word_prior=self.topic_word_prior,
            learning_method="online",
            learning_decay=self.learning_decay,
            learning_offset=self.learning_offset,
            total_samples=total_samples,
            random_state=self.seed,
            n_jobs=1,
        )

    def _batches(self, tables: Iterable[pa.Table]) -> Iterator[list[str | None]]:
        buf: list[str | None] = []
        for table in tables:
            buf.extend(table.column(self.column).to_pylist())
            while len(buf) >= self.batch_rows:
                yield buf[: self.batch_rows]
                buf = buf[self.batch_rows :]
        if buf:
            yield buf

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        from scipy.sparse import csr_matrix

        vocab: dict[str, int] = {}
        batches = []
        for texts in self._batches(tables):  # the one read of the shards
            x = self.counts(texts, vocab, grow=True)
            batches.append(x[np.diff(x.indptr) > 0])  # records without words teach nothing
        n_docs = sum(x.shape[0] for x in batches)
        df = np.zeros(len(vocab), np.int64)
        for x in batches:
            df += np.bincount(x.indices, minlength=len(vocab))[: len(vocab)]
        ok = (df >= self.min_df) & (df <= self.max_df * n_docs)
        terms = np.array(sorted(vocab, key=vocab.__getitem__), dtype=object)
        order = [j for j in np.argsort(-df, kind="stable") if ok[j]][: self.max_features]
        if len(order) < 2 or not n_docs:
            from genloom.core.errors import StepError

            raise StepError(
                f"topics: {len(order)} words are in at least min_df={self.min_df} records and at most "
                f"max_df={self.max_df} of them; lower min_df or add data",
                component=self.name,
            )
        keep = np.array(sorted(order))  # kept words in first-seen order
        remap = np.full(len(vocab), -1, np.int64)
        remap[keep] = np.arange(len(keep))
        lda = self._model(n_docs)
        kept_batches = []
        for x in batches:
            cols = remap[x.indices]
            m = cols >= 0
            rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))[m]
            y = csr_matrix((x.data[m], (rows, cols[m])), shape=(x.shape[0], len(keep)))
            y = y[np.diff(y.indptr) > 0]
            if y.shape[0]:
                kept_batches.append(y)
        for _ in range(self.passes):
            for y in kept_batches:
                lda.partial_fit(y)
        words = [str(w) for w in terms[keep]]
        comps = lda.components_
        topics = []
        for k in range(self.n_topics):
            weights = comps[k] / comps[k].sum()
            top = np.argsort(-weights, kind="stable")[: self.top_words]
            topics.append(
                {
                    "topic": str(k),
                    "words": [words[j] for j in top],
                    "weights": [float(weights[j]) for j in top],
                }
            )
        return {
            "components": comps,
            "vocabulary": words,
            "doc_topic_prior": float(lda.doc_topic_prior_),
            "topic_word_prior": float(lda.topic_word_prior_),
            "n_batch_iter": int(lda.n_batch_iter_),
            "docs": n_docs,
            "topics": topics,
        }

    def save_state(self, state: Any, path: str, fs: Any) -> None:
        buf = io.BytesIO()
        np.save(buf, state["components"], allow_pickle=False)
        with fs.open(f"{path}/components.npy", "wb") as f:
            f.write(buf.getvalue())
        with fs.open(f"{path}/state.json", "w") as f:
            json.dump({k: v for k, v in state.items() if k != "components"}, f, sort_keys=True)

    def load_state(self, path: str, fs: Any) -> Any:
        with fs.open(f"{path}/state.json") as f:
            state = json.load(f)
        with fs.open(f"{path}/components.npy", "rb") as f:
            state["components"] = np.load(io.BytesIO(f.read()), allow_pickle=False)
        return state

    def model_of(self, state: Any) -> Any:
        """A fitted scikit-learn LDA from the state (its transform is the E-step with the topics fixed)."""
        lda = state.get("_model")
        if lda is None:
            from sklearn.decomposition._online_lda_fast import _dirichlet_expectation_2d

            lda = self._model(int(state["docs"]))
            comps = np.asarray(state["components"], np.float64)
            lda.components_ = comps
            lda.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(comps))
            lda.doc_topic_prior_ = state["doc_topic_prior"]
            lda.topic_word_prior_ = state["topic_word_prior"]
            lda.n_batch_iter_ = state["n_batch_iter"]
            lda.n_features_in_ = comps.shape[1]
            lda.n_iter_ = 1
            lda.bound_ = None
            lda.random_state_ = np.random.mtrand.RandomState(self.seed)
            state["_model"] = lda
        return lda

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        texts = table.column(self.column).to_pylist()
        vocab = state.get("_vocab")
        if vocab is None:
            vocab = state["_vocab"] = {w: j for j, w in enumerate(state["vocabulary"])}
        x = self.counts(texts, vocab, grow=False)
        has = np.diff(x.indptr) > 0
        dist = np.zeros((len(texts), self.n_topics), np.float32)
        if has.any():
            dist[has] = self.model_of(state).transform(x[has]).astype(np.float32)
        flat = pa.array(dist.reshape(-1), pa.float32())
        vectors = pa.FixedSizeListArray.from_arrays(flat, self.n_topics, mask=pa.array(~has))
        labels = [str(int(k)) if h else None for k, h in zip(dist.argmax(axis=1), has, strict=True)]
        table = write_column(table, self.output, vectors)
        return write_column(table, self.label_column, pa.array(labels, pa.string()))
