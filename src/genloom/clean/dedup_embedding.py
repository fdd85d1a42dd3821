"""Near-duplicate removal by the cosine similarity of embeddings (an exact, exhaustive search)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError, StepError
from genloom.core.registry import CLEANERS, FEATURES
from genloom.core.steps import Fitted

#: rows compared at once (the block of a (block, kept) similarity matrix)
_BLOCK = 1024


def embedding_matrix(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (N, d) float32, valid (N,) bool) of a fixed_size_list / list column of floats.

    A null or empty vector is invalid (its row is all zeros); vectors of different lengths in one
    column raise RecordError."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if pa.types.is_fixed_size_list(arr.type) and arr.null_count == 0:
        d = arr.type.list_size
        values = arr.values.slice(arr.offset * d, n * d).to_numpy(zero_copy_only=False)
        return np.asarray(values, np.float32).reshape(n, d), np.ones(n, bool)
    rows = arr.to_pylist()
    dims = {len(r) for r in rows if r}
    if len(dims) > 1:
        raise RecordError("embedding_dimensions_differ", f"vector lengths {sorted(dims)} in one column")
    d = dims.pop() if dims else 0
    out = np.zeros((n, d), np.float32)
    valid = np.zeros(n, bool)
    for i, r in enumerate(rows):
        if r:
            out[i] = r
            valid[i] = True
    return out, valid


class _KeptIndex:
    """The unit vectors kept so far, in a growing array (exact search: every one is compared)."""

    def __init__(self, d: int) -> None:
        self.vectors = np.zeros((0, d), np.float32)
        self.ids: list[str] = []

    def add(self, vectors: np.ndarray, ids: list[str]) -> None:
        if len(self.ids) + len(vectors) > len(self.vectors):
            grown = np.zeros(
                (max(2 * len(self.vectors), len(self.ids) + len(vectors), 1024), vectors.shape[1]), np.float32
            )
            grown[: len(self.ids)] = self.vectors[: len(self.ids)]
            self.vectors = grown
        self.vectors[len(self.ids) : len(self.ids) + len(vectors)] = vectors
        self.ids.extend(ids)

    def best(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(highest cosine similarity, its index in ``ids``) of each row of ``block`` (-inf, -1 when empty)."""
        if not self.ids:
            return np.full(len(block), -np.inf, np.float32), np.full(len(block), -1)
        sims = block @ self.vectors[: len(self.ids)].T  # (b, kept)
        j = sims.argmax(axis=1)
        return sims[np.arange(len(block)), j], j


@FEATURES.register("dedup_embedding")
@CLEANERS.register("dedup_embedding")
class EmbeddingDedup(Fitted):
    """Drop near-duplicates by embedding: a record whose cosine similarity to an earlier kept record is at least ``threshold``.

    Reads a vector column (``column``, default ``embedding``: the ``fixed_size_list<float32>``
    the ``embedding`` feature writes; any list of floats works). Records are visited in input
    order (shard order, then row order); each one is compared with every record kept before it
    and dropped as ``near_duplicate`` when the highest cosine similarity reaches ``threshold``,
    so the first record of a group is the one kept and the result is the same whatever the
    sharding. "Kept before it" (not "any earlier record") means chains do not collapse: if B is
    dropped as a copy of A, C is compared with A, not with B. The search is exact and
    exhaustive: the fit streams the batches once and compares each block of 1024 vectors with
    every kept vector (one matrix product; float32), so it costs about N x kept x d
    multiply-adds and keeps the kept vectors in memory (d x 4 bytes each: 1.5 KB for MiniLM's
    384). The state lists the dropped ids and the id each one duplicates. Records with a null or
    all-zero vector are never dropped and never matched. It is registered in both ``clean`` and
    ``features``: in a pipeline the embedding is a feature, so the step goes in ``features:``
    after the ``embedding`` step (``clean`` runs before features; it can dedup there only on a
    vector column the source already carries).
    """

    type: Literal["dedup_embedding"] = "dedup_embedding"
    column: str = Field("embedding", description="The vector column (fixed_size_list or list of floats)")
    threshold: float = Field(
        0.95, gt=0, le=1, description="Cosine similarity from which a record is a near-duplicate"
    )
    drop_reason: ClassVar[str] = "near_duplicate"

    def _vectors(self, tables: Iterable[pa.Table]) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        for table in tables:
            if table.num_rows == 0:
                continue
            if self.column not in table.column_names:
                raise StepError(
                    f"dedup_embedding: no column {self.column!r} in the records "
                    f"(columns: {', '.join(table.column_names)}); put the step after the feature that writes it",
                    component=self.name,
                )
            vectors, valid = embedding_matrix(table.column(self.column))
            norms = np.linalg.norm(vectors, axis=1) if vectors.size else np.zeros(len(valid))
            valid &= norms > 0
            unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=valid[:, None])
            ids = table.column("id").to_pylist()
            for lo in range(0, len(ids), _BLOCK):
                yield ids[lo : lo + _BLOCK], unit[lo : lo + _BLOCK], valid[lo : lo + _BLOCK]

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        index: _KeptIndex | None = None
        duplicate_of: dict[str, str] = {}
        for ids, unit, valid in self._vectors(tables):
            if not valid.any():
                continue
            if index is None:
                index = _KeptIndex(unit.shape[1])
            elif unit.shape[1] != index.vectors.shape[1]:
                raise RecordError(
                    "embedding_dimensions_differ", f"{unit.shape[1]} after {index.vectors.shape[1]}"
                )
            rows = np.flatnonzero(valid)
            block = unit[rows]
            best, where = index.best(block)
            within = block @ block.T  # (b, b): the block against itself, for rows kept inside it
            kept_here: list[int] = []
            for k, r in enumerate(rows):
                if best[k] >= self.threshold:
                    duplicate_of[ids[r]] = index.ids[where[k]]
                    continue
                if kept_here:
                    s = within[k, kept_here]
                    m = int(s.argmax())
                    if s[m] >= self.threshold:
                        duplicate_of[ids[r]] = ids[rows[kept_here[m]]]
                        continue
                kept_here.append(k)
            index.add(block[kept_here], [ids[rows[k]] for k in kept_here])
        return {"drop_ids": sorted(duplicate_of), "duplicate_of": duplicate_of}

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        drop = state.get("_drop_set")
        if drop is None:
            drop = state["_drop_set"] = set(state["drop_ids"])
        keep = [rid not in drop for rid in table.column("id").to_pylist()]
        return table.filter(pa.array(keep, pa.bool_()))
