"""What the text vectorizers share: a vocabulary fitted in one streaming pass, scikit-learn's
vectorizers to transform with it, and the sparse / dense Arrow output columns.

The fit never holds the corpus: each batch is counted with scikit-learn's ``CountVectorizer``
(the same analyzer the transform uses) and only the per-term document and term frequencies are
kept, merged batch after batch. The vocabulary then follows scikit-learn's own rules exactly
(``min_df`` / ``max_df`` on document frequencies, ``max_features`` by corpus term frequency, terms
in sorted order), and the IDF is computed with its formula, so a vocabulary fitted shard by shard
equals the one ``TfidfVectorizer.fit`` finds on the whole corpus. ``hashing: true`` swaps in a
``HashingVectorizer``: no vocabulary to fit or store, a fixed number of columns.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from genloom.core.errors import ConfigError, MissingDependencyError, StepError
from genloom.core.steps import Fitted

#: the Arrow type of a sparse vector: one CSR row (the list offsets are the CSR indptr)
SPARSE_TYPE = pa.struct([("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])

Weighting = Literal["count", "binary", "tfidf"]


def sparse_column(matrix: Any) -> pa.StructArray:
    """A scipy CSR matrix as a ``struct<indices: list<int32>, values: list<float32>>`` array."""
    csr = matrix.tocsr()
    csr.sum_duplicates()
    csr.sort_indices()
    offsets = pa.array(csr.indptr.astype(np.int32), pa.int32())
    indices = pa.ListArray.from_arrays(offsets, pa.array(csr.indices.astype(np.int32), pa.int32()))
    values = pa.ListArray.from_arrays(offsets, pa.array(csr.data.astype(np.float32), pa.float32()))
    return pa.StructArray.from_arrays([indices, values], fields=list(SPARSE_TYPE))


def dense_column(matrix: Any) -> pa.FixedSizeListArray:
    """A scipy sparse matrix (or ndarray) as ``fixed_size_list<float32>[n_columns]``."""
    arr = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), arr.shape[1])


def sparse_to_csr(column: pa.Array | pa.ChunkedArray, n_columns: int) -> Any:
    """The inverse of ``sparse_column``: a scipy CSR matrix of ``n_columns`` columns."""
    from scipy import sparse

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], SPARSE_TYPE)
    indices = column.field("indices")
    values = column.field("values")
    offsets = np.asarray(indices.offsets, dtype=np.int64)
    idx = np.asarray(indices.values, dtype=np.int32)
    val = np.asarray(values.values, dtype=np.float32)
    start = offsets[0]
    return sparse.csr_matrix(
        (val[start : offsets[-1]], idx[start : offsets[-1]], offsets - start), shape=(len(column), n_columns)
    )


def write_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (or appended when new)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


class _Index(dict):  # type: ignore[type-arg]
    """term -> column, and -1 for a term outside the vocabulary (looked up in C by ``map``)."""

    def __missing__(self, key: str) -> int:
        return -1


class TokenListAnalyzer:
    """Word n-grams of an already tokenized record (a ``list<string>`` column such as ``tokens``),
    lowercased if asked and stop words left out: scikit-learn's word analyzer without its regex."""

    def __init__(self, ngram_range: tuple[int, int], lowercase: bool, stop_words: frozenset[str]) -> None:
        self.ngram_range = ngram_range
        self.lowercase = lowercase
        self.stop_words = stop_words

    def __call__(self, tokens: list[str] | None) -> list[str]:
        words = [t.lower() if self.lowercase else t for t in tokens or [] if t]
        words = [w for w in words if w not in self.stop_words]
        lo, hi = self.ngram_range
        out = words if lo == 1 else []
        for n in range(max(lo, 2), hi + 1):
            out += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        return out


class CategoryAnalyzer:
    """One term per record: the column's value as text (null: none), for one-hot of a categorical column."""

    def __init__(self, lowercase: bool) -> None:
        self.lowercase = lowercase

    def __call__(self, value: Any) -> list[str]:
        if value is None:
            return []
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return [text.lower() if self.lowercase else text]


class VectorizerStep(Fitted):
    """Base of tfidf, bag_of_words, one_hot and ngrams: a sparse vector per record from a fitted
    vocabulary (or a hashing space). Not registered itself."""

    column: str = Field("text", description="Input column: text, or a list<string> of tokens")
    output: str | None = Field(None, description="Output column name (default: the step's type)")
    analyzer: Literal["word", "char", "char_wb"] = Field(
        "word",
        description="word: words of 2+ characters (token_pattern); char: character n-grams; "
        "char_wb: character n-grams inside word boundaries",
    )
    ngram_range: tuple[int, int] = Field((1, 1), description="Smallest and largest n of the n-grams")
    lowercase: bool = Field(True, description="Lowercase before tokenizing")
    token_pattern: str = Field(r"(?u)\b\w\w+\b", description="Regex of a word (analyzer word)")
    stop_words: Literal["english"] | list[str] | None = Field(
        None, description="Words left out: scikit-learn's English list, or your own"
    )
    min_df: int | float = Field(
        1, ge=0, description="Keep terms in at least this many documents (an int) or this share (a float)"
    )
    max_df: int | float = Field(
        1.0, ge=0, description="Keep terms in at most this many documents (an int) or this share (a float)"
    )
    max_features: int | None = Field(
        None, ge=1, description="Keep only the most frequent terms (by count in the corpus)"
    )
    hashing: bool = Field(
        False, description="Hash terms into n_features columns (HashingVectorizer): no vocabulary to fit"
    )
    n_features: int = Field(2**20, ge=1, description="Columns of the hashing space (hashing: true)")
    dense: bool = Field(False, description="Write fixed_size_list<float32>[d] instead of a sparse struct")

    requires: ClassVar[tuple[str, ...]] = ("sklearn",)
    extra: ClassVar[str] = "features"

    @model_validator(mode="after")
    def _check_ranges(self) -> VectorizerStep:
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must be (min, max) with 1 <= min <= max, got {self.ngram_range}")
        if (
            isinstance(self.max_df, float)
            and self.max_df > 1.0
            or isinstance(self.min_df, float)
            and self.min_df > 1.0
        ):
            raise ValueError("a float min_df / max_df is a share of the documents, at most 1.0")
        return self

    def check(self, path: str) -> None:
        if self.hashing and (self.max_features is not None or self.min_df != 1 or self.max_df != 1.0):
            raise ConfigError(
                "hashing has no vocabulary to limit: min_df, max_df and max_features do not apply",
                path=path,
                hint="drop them, or set hashing: false",
            )
        if self.dense and self.hashing and self.n_features > 65536:
            raise ConfigError(
                f"dense output of {self.n_features} hashed columns is too wide",
                path=f"{path}.n_features",
                hint="lower n_features, or keep the sparse output",
            )

    @property
    def output_column(self) -> str:
        """The column the step writes."""
        return self.output or self.type

    def current_weighting(self) -> Weighting:
        """How values are weighted: counts here; each component overrides it (or has an option)."""
        return "count"

    def tfidf_options(self) -> dict[str, Any]:
        """scikit-learn's TfidfTransformer options (the tfidf component makes them configurable)."""
        return {"norm": "l2", "use_idf": True, "smooth_idf": True, "sublinear_tf": False}

    # -- scikit-learn objects ------------------------------------------------------------------

    def _analyzer_for(self, column_type: pa.DataType) -> Any:
        """What scikit-learn's vectorizers get as ``analyzer``: its name, or a callable for
        pre-tokenized list columns."""
        if pa.types.is_list(column_type) or pa.types.is_large_list(column_type):
            return TokenListAnalyzer(self.ngram_range, self.lowercase, self._stop_set())
        return self.analyzer

    def _stop_set(self) -> frozenset[str]:
        if self.stop_words == "english":
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            return frozenset(ENGLISH_STOP_WORDS)
        return frozenset(self.stop_words or ())

    def _vectorizer(self, analyzer: Any, vocabulary: dict[str, int] | None) -> Any:
        """A CountVectorizer (on ``vocabulary``, or free for counting a batch) or HashingVectorizer."""
        try:
            from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
        except ImportError as e:
            raise MissingDependencyError("scikit-learn", "pip install 'genloom[features]'") from e
        if callable(analyzer):  # it does its own lowercasing, stop words and n-grams
            common: dict[str, Any] = {"analyzer": analyzer, "lowercase": False, "token_pattern": None}
        else:
            word = analyzer == "word"
            common = {
                "analyzer": analyzer,
                "ngram_range": tuple(self.ngram_range),
                "lowercase": self.lowercase,
                "token_pattern": self.token_pattern if word else None,
                "stop_words": self.stop_words if word else None,
            }
        binary = self.current_weighting() == "binary"
        if self.hashing:
            return HashingVectorizer(
                n_features=self.n_features,
                binary=binary,
                norm=None,
                alternate_sign=False,
                dtype=np.float64,
                **common,
            )
        if vocabulary is None:
            return CountVectorizer(dtype=np.int64, **common)
        return CountVectorizer(vocabulary=vocabulary, binary=binary, dtype=np.float64, **common)

    def _documents(self, table: pa.Table) -> tuple[list[Any], pa.DataType]:
        """The input column's values (null text as ""), and its Arrow type."""
        if self.column not in table.column_names:
            raise StepError(
                f"the input has no column {self.column!r} (columns: {', '.join(table.column_names)})",
                component=self.type,
            )
        col = table.column(self.column)
        values = col.to_pylist()
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = [v or "" for v in values]
        return values, col.type

    # -- fit: one streaming pass ---------------------------------------------------------------

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        if self.hashing:
            return self._fit_hashing(tables)
        df: Counter[str] = Counter()
        tf: Counter[str] = Counter()
        n_docs = 0
        for table in tables:
            if not table.num_rows:
                continue
            docs, col_type = self._documents(table)
            n_docs += len(docs)
            analyze = self._vectorizer(self._analyzer_for(col_type), None).build_analyzer()
            for doc in docs:
                terms = analyze(doc)
                tf.update(terms)  # Counter.update of an iterable counts in C
                df.update(set(terms))
        terms = self._limit(sorted(df), df, tf, n_docs)
        state: dict[str, Any] = {"vocabulary": terms, "n_docs": n_docs}
        if self.current_weighting() == "tfidf":
            dfs = np.array([df[t] for t in terms], dtype=np.int64)
            state["idf"] = self._idf(dfs, n_docs)
        return state

    def _limit(self, terms: list[str], df: dict[str, int], tf: dict[str, int], n_docs: int) -> list[str]:
        """scikit-learn's ``_limit_features``: document-frequency bounds, then ``max_features`` by
        term frequency over the sorted terms (the same argsort, so ties break the same way)."""
        if not terms:
            raise StepError(
                f"no terms in column {self.column!r}: the input is empty or holds only stop words",
                component=self.type,
            )
        high = self.max_df if isinstance(self.max_df, int) else self.max_df * n_docs
        low = self.min_df if isinstance(self.min_df, int) else self.min_df * n_docs
        if high < low:
            raise StepError("max_df corresponds to fewer documents than min_df", component=self.type)
        dfs = np.array([df[t] for t in terms], dtype=np.int64)
        mask = (dfs <= high) & (dfs >= low)
        if self.max_features is not None and mask.sum() > self.max_features:
            tfs = np.array([tf[t] for t in terms], dtype=np.int64)
            keep = (-tfs[mask]).argsort()[: self.max_features]
            new_mask = np.zeros(len(dfs), dtype=bool)
            new_mask[np.where(mask)[0][keep]] = True
            mask = new_mask
        kept = [t for t, m in zip(terms, mask, strict=True) if m]
        if not kept:
            raise StepError(
                f"after min_df={self.min_df} / max_df={self.max_df} no terms remain",
                component=self.type,
            )
        return kept

    def _idf(self, dfs: np.ndarray, n_docs: int) -> np.ndarray:
        """scikit-learn's TfidfTransformer IDF: ``ln((1 + n) / (1 + df)) + 1`` when smoothed."""
        d = dfs.astype(np.float64)
        smooth = int(self.tfidf_options()["smooth_idf"])
        d += smooth
        n = n_docs + smooth
        with np.errstate(divide="ignore"):
            return np.log(n / d) + 1

    def _fit_hashing(self, tables: Iterable[pa.Table]) -> Any:
        if self.current_weighting() != "tfidf":
            return {"vocabulary": None}  # nothing to learn: the input is not even read
        n_docs = 0
        df = np.zeros(self.n_features, dtype=np.int64)
        for table in tables:
            if not table.num_rows:
                continue
            docs, col_type = self._documents(table)
            n_docs += len(docs)
            counts = self._vectorizer(self._analyzer_for(col_type), None).transform(docs).tocsr()
            counts.sum_duplicates()
            df += np.bincount(counts.indices, minlength=self.n_features)
        return {"vocabulary": None, "n_docs": n_docs, "idf": self._idf(df, n_docs)}

    # -- transform per shard -------------------------------------------------------------------

    def vectorize(self, table: pa.Table, state: Any) -> Any:
        """The scipy CSR matrix of ``table`` (rows in order) under the fitted ``state``."""
        docs, col_type = self._documents(table)
        cache = state.setdefault("_objects", {})
        key = str(col_type)
        if key not in cache:
            vocab = None if self.hashing else _Index((t, i) for i, t in enumerate(state["vocabulary"]))
            vec = self._vectorizer(self._analyzer_for(col_type), vocab)
            tfidf = None
            if self.current_weighting() == "tfidf":
                from sklearn.feature_extraction.text import TfidfTransformer

                tfidf = TfidfTransformer(**self.tfidf_options())
                tfidf.idf_ = np.asarray(state["idf"], dtype=np.float64)
            cache[key] = (vec, tfidf, vec.build_analyzer(), vocab)
        vec, tfidf, analyze, vocab = cache[key]
        if not docs:
            from scipy import sparse

            return sparse.csr_matrix((0, self.n_columns(state)), dtype=np.float64)
        counts = vec.transform(docs) if self.hashing else self._count(docs, analyze, vocab)
        return tfidf.transform(counts, copy=False) if tfidf is not None else counts

    def _count(self, docs: list[Any], analyze: Any, index: dict[str, int]) -> Any:
        """What ``CountVectorizer(vocabulary=...).transform`` returns (float64 counts, sorted
        indices; 1s when binary), with the per-term lookups done in C (``map``) and the counting
        by SciPy (duplicate (row, column) entries are summed)."""
        from scipy import sparse

        terms: list[str] = []
        lengths = np.empty(len(docs), dtype=np.int64)
        for i, doc in enumerate(docs):
            found = analyze(doc)
            terms += found
            lengths[i] = len(found)
        cols = np.fromiter(map(index.__getitem__, terms), dtype=np.int64, count=len(terms))
        rows = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        known = cols >= 0
        rows, cols = rows[known], cols[known]
        matrix = sparse.csr_matrix(
            (np.ones(len(cols), dtype=np.float64), (rows, cols)), shape=(len(docs), len(index))
        )
        matrix.sum_duplicates()
        matrix.sort_indices()
        if self.current_weighting() == "binary":
            matrix.data[:] = 1.0
        return matrix

    def n_columns(self, state: Any) -> int:
        """The width of the vectors."""
        return self.n_features if self.hashing else len(state["vocabulary"])

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        matrix = self.vectorize(table, state)
        column = dense_column(matrix) if self.dense else sparse_column(matrix)
        return write_column(table, self.output_column, column)

    # -- state: vocabulary (JSON) and IDF (NumPy) ----------------------------------------------

    def save_state(self, state: Any, path: str, fs: Any) -> None:
        meta = {k: v for k, v in state.items() if k not in ("idf", "_objects")}
        with fs.open(f"{path}/state.json", "w") as f:
            json.dump(meta, f, ensure_ascii=False)
        if state.get("idf") is not None:
            with fs.open(f"{path}/idf.npy", "wb") as f:
                np.save(f, np.asarray(state["idf"], dtype=np.float64), allow_pickle=False)

    def load_state(self, path: str, fs: Any) -> Any:
        with fs.open(f"{path}/state.json") as f:
            state = json.load(f)
        if fs.exists(f"{path}/idf.npy"):
            with fs.open(f"{path}/idf.npy", "rb") as f:
                state["idf"] = np.load(f, allow_pickle=False)
        return state
