"""Feature shards on disk: the vector columns (floats inside lists) are written without a Parquet
dictionary, every other column with one, and the table reads back as it was written."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genloom.core.store import write_parquet_bytes
from genloom.features._vectorize import dense_column, sparse_column

DICTIONARY = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}


def _table() -> pa.Table:
    from scipy import sparse

    rng = np.random.default_rng(0)
    n = 300
    counts = sparse.random(n, 50, density=0.1, random_state=1, format="csr") * 7
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "label": [("pos", "neg", "neutral")[i % 3] for i in range(n)],
            "score": pa.array(np.round(rng.uniform(-1, 1, n), 2), pa.float32()),
            "count": pa.array(rng.integers(0, 5, n), pa.int32()),
            "tfidf": sparse_column(counts),
            "embedding": dense_column(rng.standard_normal((n, 8))),
            "series": pa.array([list(rng.standard_normal(3)) for _ in range(n)], pa.list_(pa.float64())),
        }
    )


def test_vector_floats_have_no_dictionary_and_the_rest_do() -> None:
    table = _table()
    data = write_parquet_bytes(table)
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    encodings = {
        meta.row_group(0).column(i).path_in_schema: set(meta.row_group(0).column(i).encodings)
        for i in range(meta.num_columns)
    }
    vectors = {"tfidf.values.list.element", "embedding.list.element", "series.list.element"}
    assert vectors <= set(encodings)
    for path, found in encodings.items():
        if path in vectors:
            assert not found & DICTIONARY, (path, found)
        else:  # strings, the scalar float, ints, and the sparse vectors' int32 indices
            assert found & DICTIONARY, (path, found)
    assert pq.read_table(pa.BufferReader(data)).equals(table)


def test_same_table_same_bytes() -> None:
    table = _table()
    assert write_parquet_bytes(table) == write_parquet_bytes(table)
    assert write_parquet_bytes(table.slice(0, 0)) == write_parquet_bytes(table.slice(0, 0))


def test_a_table_without_vectors_is_dictionary_encoded_throughout() -> None:
    table = _table().select(["id", "label", "score", "count"])
    meta = pq.ParquetFile(pa.BufferReader(write_parquet_bytes(table))).metadata
    for i in range(meta.num_columns):
        assert set(meta.row_group(0).column(i).encodings) & DICTIONARY
