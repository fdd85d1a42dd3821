"""What the text vectorizers share: a vocabulary fitted in one streaming pass, scikit-learn's
vectorizers to transform with it, and the sparse / dense Arrow output columns.

The fit never holds the corpus: each batch is cut into terms by scikit-learn's analyzer (the same
one the transform uses) and only the per-term document and term frequencies are kept. The features
stage counts each input shard in its executor (``fit_shard``, in the worker pool) and adds the
counts up (``merge_fits``); ``fit`` does the same over a stream of tables in one process. The
vocabulary then follows scikit-learn's own rules exactly (``min_df`` / ``max_df`` on document
frequencies, ``max_features`` by corpus term frequency, terms in sorted order), and the IDF is
computed with its formula, so a vocabulary fitted shard by shard equals the one
``TfidfVectorizer.fit`` finds on the whole corpus. While the stage fits, each batch's count matrix
is left in the state's folder (``counts/<digest of the input column>.npz``), and the transform of
that same batch maps it to the fitted vocabulary instead of tokenizing the text again (then
removes it); any other input is tokenized. ``hashing: true`` swaps in a ``HashingVectorizer``: no
vocabulary to fit or store, a fixed number of columns.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
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


class _Grow(dict):  # type: ignore[type-arg]
    """term -> column, a new term getting the next column (looked up in C by ``map``); ``terms``
    lists the terms in column order. ``special`` entries (the batch separator, stop words) map
    to negative markers and are not terms."""

    def __init__(self, special: dict[str, int] | None = None) -> None:
        super().__init__(special or {})
        self.terms: list[str] = []

    def __missing__(self, key: str) -> int:
        value = self[key] = len(self.terms)
        self.terms.append(key)
        return value


#: scikit-learn's default token_pattern (words of two or more word characters)
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
#: what joins a batch's texts for one regex pass (no word character, never inside a token)
_SEP = "\x00"
#: the default token pattern, or the separator, in one pass over the joined batch. Without its
#: ``\b`` assertions: ``findall`` of ``\w\w+`` from left to right finds the same maximal runs of
#: two or more word characters (a scan only starts inside a run after a one-character run), and
#: is about a quarter faster
_JOINED_TOKENS = re.compile(r"(?u)\x00|\w\w+")
#: column markers of the separator and of stop words in a term lookup
_SEP_COL, _STOP_COL = -2, -3


def _joined_terms(
    docs: list[str], lookup: dict[str, int], lowercase: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """The columns of every term of ``docs`` in order (``lookup``: term -> column, -1 for an
    unknown term kept as such; stop words and the separator left out) and each document's term
    count, from one lowercase and one ``findall`` over the texts joined by NUL: the same tokens
    scikit-learn's word analyzer finds document by document (``\b`` sees NUL as it sees the ends
    of a text, and no token can hold it). None when a text itself holds a NUL."""
    joined = _SEP.join(docs)
    if joined.count(_SEP) != len(docs) - 1:
        return None
    if lowercase:
        joined = joined.lower()
    terms = _JOINED_TOKENS.findall(joined)
    cols = np.fromiter(map(lookup.__getitem__, terms), dtype=np.int64, count=len(terms))
    doc_of = np.cumsum(cols == _SEP_COL)
    keep = cols >= -1
    return cols[keep], np.bincount(doc_of[keep], minlength=len(docs)).astype(np.int64)


def _normalize_rows(data: np.ndarray, indptr: np.ndarray, norm: str) -> None:
    """scikit-learn's in-place CSR row normalisation (``inplace_csr_row_normalize_l2`` / ``_l1``),
    with its summing order: each row's squares (or absolute values) added left to right, then
    divided by the root (or the sum); an all-zero row is left as it is."""
    lengths = np.diff(indptr)
    if not len(lengths) or not len(data):
        return
    parts = data * data if norm == "l2" else np.abs(data)
    order = np.argsort(-lengths, kind="stable")
    longest = np.sort(lengths)[::-1]
    sums = np.zeros(len(lengths), dtype=np.float64)
    starts = indptr[:-1].astype(np.int64)
    for k in range(int(longest[0])):
        rows = order[: int(np.searchsorted(-longest, -k, side="left"))]  # rows longer than k
        sums[rows] += parts[starts[rows] + k]
    scale = np.sqrt(sums) if norm == "l2" else sums
    scale[sums == 0.0] = 1.0
    data /= np.repeat(scale, lengths)


def _add(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``total + part`` where ``part`` may be longer (columns of terms first seen since)."""
    if len(part) > len(total):
        total = np.concatenate([total, np.zeros(len(part) - len(total), dtype=total.dtype)])
    total[: len(part)] += part
    return total


def _digest(column: pa.ChunkedArray | pa.Array) -> str:
    """A digest of a column's values: its type, length, null count, and each buffer (validity,
    offsets, data) hashed in place, without the copy an IPC serialisation makes. A sliced array
    is copied first (``concat_arrays``), so that equal values give equal buffers."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.offset:
        array = pa.concat_arrays([array])
    h = hashlib.blake2b(f"{array.type}|{len(array)}|{array.null_count}".encode(), digest_size=16)
    for buf in array.buffers():
        h.update(b"|" if buf is None else memoryview(buf))
    return h.hexdigest()


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

    def check_requirements(self) -> None:
        """scikit-learn must be installed; it is imported only where it is used (another analyzer
        than the default word one, hashing, the English stop words), since importing it costs a
        worker process about a second of CPU (SciPy's stats)."""
        if importlib.util.find_spec("sklearn") is None:
            raise MissingDependencyError(
                f"sklearn (needed by {self.type!r})", "pip install 'genloom[features]'"
            )

    def _joined_ok(self, column_type: pa.DataType) -> bool:
        """Whether a batch of this column can be cut in one pass (``_joined_terms``): text, the
        default word analyzer of single words."""
        return (
            (pa.types.is_string(column_type) or pa.types.is_large_string(column_type))
            and self.analyzer == "word"
            and tuple(self.ngram_range) == (1, 1)
            and self.token_pattern == DEFAULT_TOKEN_PATTERN
        )

    def _terms(
        self, docs: list[Any], col_type: pa.DataType, lookup: dict[str, int], analyzers: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The column of every term of ``docs`` in order (through ``lookup``, which maps the
        separator and stop words to negative markers) and each document's term count: one pass
        over the joined batch for the default word analyzer, else scikit-learn's analyzer per
        document (cached in ``analyzers`` by column type)."""
        if self._joined_ok(col_type):
            found = _joined_terms(docs, lookup, self.lowercase)
            if found is not None:
                return found
        key = str(col_type)
        if key not in analyzers:
            analyzers[key] = self._vectorizer(self._analyzer_for(col_type), None).build_analyzer()
        analyze = analyzers[key]
        terms: list[str] = []
        lengths = np.empty(len(docs), dtype=np.int64)
        for i, doc in enumerate(docs):
            found_terms = analyze(doc)
            terms += found_terms
            lengths[i] = len(found_terms)
        cols = np.fromiter(map(lookup.__getitem__, terms), dtype=np.int64, count=len(terms))
        return cols, lengths

    def _specials(self) -> dict[str, int]:
        """The markers a term lookup starts with: the batch separator, and the stop words."""
        special = dict.fromkeys(self._stop_set(), _STOP_COL) if self.stop_words else {}
        special[_SEP] = _SEP_COL
        return special

    def _weight(self, counts: Any, state: Any) -> Any:
        """scikit-learn's ``TfidfTransformer.transform`` of float64 CSR counts, in place and in the
        same order of operations: ``1 + ln(tf)`` when sublinear, times the IDF of the column,
        then each row divided by its norm."""
        opts = self.tfidf_options()
        if opts["sublinear_tf"]:
            np.log(counts.data, counts.data)
            counts.data += 1.0
        if opts["use_idf"]:
            counts.data *= np.asarray(state["idf"], dtype=np.float64)[counts.indices]
        if opts["norm"] is not None:
            _normalize_rows(counts.data, counts.indptr, opts["norm"])
        return counts

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

    def _input_type(self, table: pa.Table) -> pa.DataType:
        """The Arrow type of the input column (a StepError when the table has none)."""
        if self.column not in table.column_names:
            raise StepError(
                f"the input has no column {self.column!r} (columns: {', '.join(table.column_names)})",
                component=self.type,
            )
        return table.schema.field(self.column).type

    def _documents(self, table: pa.Table) -> tuple[list[Any], pa.DataType]:
        """The input column's values (null text as ""), and its Arrow type."""
        col_type = self._input_type(table)
        values = table.column(self.column).to_pylist()
        if pa.types.is_string(col_type) or pa.types.is_large_string(col_type):
            values = [v or "" for v in values]
        return values, col_type

    # -- fit: counted shard by shard, then merged ----------------------------------------------

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        """One streaming pass over every batch in this process: ``fit_shard`` of them all, merged.
        (The features stage calls ``fit_shard`` per input shard in its executor, then
        ``merge_fits``, which gives the same state.)"""
        return self.merge_fits([self.fit_shard(tables)])

    def fit_shard(
        self, tables: Iterable[pa.Table], scratch: str | None = None, fs: Any = None
    ) -> dict[str, Any]:
        """The counts of one shard's batches: each term (first-seen order) with its document and
        corpus frequency, and the document count; for hashing with IDF, the document frequency of
        every hashed column. With ``scratch`` (a folder on fsspec ``fs``: the state's, while the
        stage fits it), each batch's count matrix is also saved there under the digest of its
        input column, so the transform of that same batch maps it to the fitted vocabulary
        instead of tokenizing the text a second time."""
        if self.hashing and self.current_weighting() != "tfidf":
            return {"n_docs": 0}  # nothing to learn: the input is not even read
        n_docs = 0
        index = _Grow(self._specials())  # term -> column of this shard, in first-seen order
        df = np.zeros(self.n_features if self.hashing else 0, dtype=np.int64)
        tf = np.zeros(0, dtype=np.int64)
        analyzers: dict[str, Any] = {}
        for table in tables:
            if not table.num_rows:
                continue
            docs, col_type = self._documents(table)
            n_docs += len(docs)
            if self.hashing:
                key = f"hashing {col_type}"
                if key not in analyzers:
                    analyzers[key] = self._vectorizer(self._analyzer_for(col_type), None)
                counts = analyzers[key].transform(docs).tocsr()
                counts.sum_duplicates()
                df += np.bincount(counts.indices, minlength=self.n_features)
                if scratch is not None:
                    self._save_counts(table, counts, None, scratch, fs)
                continue
            cols, lengths = self._terms(docs, col_type, index, analyzers)
            counts = self._csr(cols, lengths, len(index.terms), np.int32)
            batch_df = np.bincount(counts.indices, minlength=len(index.terms))
            df = _add(df, batch_df)
            tf = _add(tf, np.bincount(cols, minlength=len(index.terms)))
            if scratch is not None:
                used = np.flatnonzero(batch_df)  # the batch's own terms, renumbered 0..k-1
                position = np.zeros(len(index.terms), dtype=np.int32)
                position[used] = np.arange(len(used), dtype=np.int32)
                counts.indices = position[counts.indices]
                terms = index.terms
                self._save_counts(table, counts, [terms[u] for u in used.tolist()], scratch, fs)
        if self.hashing:
            return {"n_docs": n_docs, "df": df}
        return {"n_docs": n_docs, "terms": list(index.terms), "df": df, "tf": tf}

    def merge_fits(self, parts: list[dict[str, Any]]) -> Any:
        """The state from the shards' counts (in any order: frequencies add up, and the
        vocabulary is chosen over the sorted terms)."""
        n_docs = sum(int(p["n_docs"]) for p in parts)
        if self.hashing:
            if self.current_weighting() != "tfidf":
                return {"vocabulary": None}
            df_h = np.zeros(self.n_features, dtype=np.int64)
            for p in parts:
                df_h += p["df"]
            return {"vocabulary": None, "n_docs": n_docs, "idf": self._idf(df_h, n_docs)}
        # every shard's terms numbered in one dict (looked up in C), their counts added by bincount
        index = _Grow()
        cols = [np.fromiter(map(index.__getitem__, p["terms"]), np.int64, len(p["terms"])) for p in parts]
        where = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        n_terms = len(index.terms)
        df_all = np.bincount(where, np.concatenate([p["df"] for p in parts]), n_terms) if parts else where
        tf_all = np.bincount(where, np.concatenate([p["tf"] for p in parts]), n_terms) if parts else where
        order = sorted(range(n_terms), key=index.terms.__getitem__)  # scikit-learn's sorted terms
        terms = [index.terms[i] for i in order]
        dfs = df_all[order].astype(np.int64)
        kept = self._limit(terms, dfs, tf_all[order].astype(np.int64), n_docs)
        state: dict[str, Any] = {"vocabulary": [terms[i] for i in kept.tolist()], "n_docs": n_docs}
        if self.current_weighting() == "tfidf":
            state["idf"] = self._idf(dfs[kept], n_docs)
        return state

    @staticmethod
    def _csr(cols: np.ndarray, lengths: np.ndarray, n_columns: int, dtype: Any) -> Any:
        """The CSR count matrix of the documents whose terms' columns are ``cols`` (``lengths``
        per document, in order): each row's indices sorted and a term's repeats added up (SciPy),
        as ``CountVectorizer`` gives it."""
        from scipy import sparse

        indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        counts = sparse.csr_matrix(
            (np.ones(len(cols), dtype=dtype), cols.astype(np.int32), indptr), shape=(len(lengths), n_columns)
        )
        counts.sum_duplicates()
        return counts

    def _limit(self, terms: list[str], dfs: np.ndarray, tfs: np.ndarray, n_docs: int) -> np.ndarray:
        """scikit-learn's ``_limit_features`` over the sorted ``terms`` and their document and
        term frequencies: document-frequency bounds, then ``max_features`` by term frequency (the
        same argsort, so ties break the same way); the positions of the terms kept, in order."""
        if not terms:
            raise StepError(
                f"no terms in column {self.column!r}: the input is empty or holds only stop words",
                component=self.type,
            )
        high = self.max_df if isinstance(self.max_df, int) else self.max_df * n_docs
        low = self.min_df if isinstance(self.min_df, int) else self.min_df * n_docs
        if high < low:
            raise StepError("max_df corresponds to fewer documents than min_df", component=self.type)
        mask = (dfs <= high) & (dfs >= low)
        if self.max_features is not None and mask.sum() > self.max_features:
            keep = (-tfs[mask]).argsort()[: self.max_features]
            new_mask = np.zeros(len(dfs), dtype=bool)
            new_mask[np.where(mask)[0][keep]] = True
            mask = new_mask
        kept = np.flatnonzero(mask)
        if not len(kept):
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

    # -- the fit's counts, kept for the transform ------------------------------------------------

    def _save_counts(
        self, table: pa.Table, counts: Any, terms: list[str] | None, scratch: str, fs: Any
    ) -> None:
        """Write one batch's counts (and its terms, in column order) to ``scratch/counts/``."""
        buf = io.BytesIO()
        arrays = {"indptr": counts.indptr, "indices": counts.indices, "data": counts.data.astype(np.int32)}
        if terms is not None:
            arrays["terms"] = np.frombuffer(json.dumps(terms, ensure_ascii=False).encode(), dtype=np.uint8)
        np.savez(buf, **arrays)
        path = f"{scratch}/counts/{_digest(table.column(self.column))}.npz"
        fs.makedirs(f"{scratch}/counts", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with fs.open(tmp, "wb") as f:
            f.write(buf.getvalue())
        fs.mv(tmp, path)

    def _reuse_counts(self, table: pa.Table, state: Any, vocab: dict[str, int] | None) -> Any:
        """The batch's count matrix from the fit's scratch counts, in the fitted vocabulary's
        columns (exactly what counting it again gives), or None when the fit saved none for this
        very input (another input, a state fitted earlier, or another process took it). The file
        is removed once read: it served its one transform."""
        scratch, fs = state.get("_dir"), state.get("_fs")
        if scratch is None or fs is None:
            return None
        from scipy import sparse

        path = f"{scratch}/counts/{_digest(table.column(self.column))}.npz"
        try:
            with fs.open(path, "rb") as f:
                saved = np.load(io.BytesIO(f.read()), allow_pickle=False)
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)
        except FileNotFoundError:
            return None
        indptr, indices, data = saved["indptr"], saved["indices"], saved["data"]
        n = table.num_rows
        if len(indptr) != n + 1:
            return None
        if vocab is None:  # hashing: the columns are the hashed ones already
            cols, keep = indices, slice(None)
            new_indptr = indptr
        else:
            terms = json.loads(saved["terms"].tobytes().decode())
            to_global = np.fromiter(map(vocab.__getitem__, terms), dtype=np.int64, count=len(terms))
            mapped = to_global[indices]
            keep = mapped >= 0
            cols = mapped[keep]
            rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))[keep]
            new_indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=n), out=new_indptr[1:])
        values = data[keep].astype(np.float64)
        if self.current_weighting() == "binary":
            values[:] = 1.0
        matrix = sparse.csr_matrix((values, cols, new_indptr), shape=(n, self.n_columns(state)))
        matrix.sort_indices()
        return matrix

    # -- transform per shard -------------------------------------------------------------------

    def vectorize(self, table: pa.Table, state: Any) -> Any:
        """The scipy CSR matrix of ``table`` (rows in order) under the fitted ``state``."""
        col_type = self._input_type(table)
        cache = state.setdefault("_objects", {})
        if "lookup" not in cache:
            terms = state["vocabulary"]
            vocab = None if self.hashing else _Index(zip(terms, range(len(terms)), strict=True))
            lookup = None
            if vocab is not None:  # stop words are not in the vocabulary: unknown (-1) like any other
                lookup = _Index(vocab)
                lookup[_SEP] = _SEP_COL
            cache.update(vocab=vocab, lookup=lookup, analyzers={})
        vocab, lookup, analyzers = cache["vocab"], cache["lookup"], cache["analyzers"]
        if not table.num_rows:
            from scipy import sparse

            return sparse.csr_matrix((0, self.n_columns(state)), dtype=np.float64)
        counts = self._reuse_counts(table, state, vocab)
        if counts is None:
            docs, _ = self._documents(table)
            if self.hashing:
                key = f"hashing {col_type}"
                if key not in analyzers:
                    analyzers[key] = self._vectorizer(self._analyzer_for(col_type), None)
                counts = analyzers[key].transform(docs)
            else:
                counts = self._count(docs, col_type, lookup, analyzers, self.n_columns(state))
        return self._weight(counts, state) if self.current_weighting() == "tfidf" else counts

    def _count(
        self,
        docs: list[Any],
        col_type: pa.DataType,
        lookup: dict[str, int],
        analyzers: dict[str, Any],
        n_columns: int,
    ) -> Any:
        """What ``CountVectorizer(vocabulary=...).transform`` returns (float64 counts, sorted
        indices; 1s when binary): the terms' columns looked up in C (``map``), terms outside the
        vocabulary left out, the counting by SciPy."""
        cols, lengths = self._terms(docs, col_type, lookup, analyzers)
        known = cols >= 0
        if not known.all():
            rows = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)[known]
            cols, lengths = cols[known], np.bincount(rows, minlength=len(docs))
        matrix = self._csr(cols, lengths, n_columns, np.float64)
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
        meta = {k: v for k, v in state.items() if k != "idf" and not k.startswith("_")}
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
        state["_dir"], state["_fs"] = path, fs  # where the fit's counts of each batch may wait
        return state
