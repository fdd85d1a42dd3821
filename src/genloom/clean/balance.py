"""Balance a corpus by a label column: down-sample every class to the rarest one's size, or to a cap."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import StepError
from genloom.core.registry import CLEANERS, FEATURES
from genloom.core.steps import Fitted


def rank_keys(ids: list[str], seed: int) -> np.ndarray:
    """A 64-bit pseudo-random key per id, the same in every process and run (BLAKE2b of seed + id)."""
    salt = str(seed).encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8, key=salt[:64]).digest(), "big")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


@FEATURES.register("balance")
@CLEANERS.register("balance")
class Balance(Fitted):
    """Down-sample the classes of a label column (``topic``, ``sentiment_label``...) to equal sizes.

    Each class keeps ``per_class`` records, or as many as the rarest class has when it is not
    set (with ``per_class`` set, a smaller class keeps all of its records). Which records stay is
    decided by a seeded hash of the record id (BLAKE2b keyed with ``seed``): in each class the
    records with the smallest keys are kept, so the choice is the same whatever the sharding,
    the order or the number of processes, and it changes with ``seed``. The rest are dropped as
    ``balanced_out``. The fit streams the label column once and keeps one 8-byte key per record.
    Records with a null or empty label are kept (``missing: keep``, the default) or dropped
    (``missing: drop``) and never count as a class; ``classes`` restricts balancing to the
    listed classes (the others are kept as they are). Registered in ``clean`` and ``features``:
    labels that features compute (``topic``, ``sentiment_label``) exist only in ``features:``,
    after the step that writes them; a label column of the source can be balanced in ``clean:``.
    """

    type: Literal["balance"] = "balance"
    column: str = Field(..., description="The label column whose classes are balanced")
    per_class: int | None = Field(
        None, ge=1, description="Records kept per class (None: the size of the rarest class)"
    )
    classes: list[str] | None = Field(None, description="Balance only these classes (None: every class)")
    missing: Literal["keep", "drop"] = Field("keep", description="What happens to records without a label")
    seed: int = Field(0, description="Changes which records of a class are kept")
    drop_reason: ClassVar[str] = "balanced_out"

    def _labels(self, table: pa.Table) -> list[str | None]:
        if self.column not in table.column_names:
            raise StepError(
                f"balance: no column {self.column!r} in the records (columns: {', '.join(table.column_names)}); "
                "put the step after the step that writes it",
                component=self.name,
            )
        return [None if v is None or str(v) == "" else str(v) for v in table.column(self.column).to_pylist()]

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        keys: dict[str, list[np.ndarray]] = {}
        for table in tables:
            if table.num_rows == 0:
                continue
            labels = self._labels(table)
            k = rank_keys(table.column("id").to_pylist(), self.seed)
            by_class: dict[str, list[int]] = {}
            for i, lab in enumerate(labels):
                if lab is not None and (self.classes is None or lab in self.classes):
                    by_class.setdefault(lab, []).append(i)
            for lab, rows in by_class.items():
                keys.setdefault(lab, []).append(k[rows])
        counts = {lab: int(sum(len(a) for a in arrs)) for lab, arrs in keys.items()}
        target = self.per_class if self.per_class is not None else min(counts.values(), default=0)
        limits: dict[str, str | None] = {}  # class -> the largest key kept (decimal), None: keep all
        for lab, arrs in keys.items():
            if counts[lab] <= target:
                limits[lab] = None
                continue
            allk = np.sort(np.concatenate(arrs))
            limits[lab] = str(int(allk[target - 1]))
        kept = {lab: min(n, target) for lab, n in counts.items()}
        return {"counts": counts, "kept": kept, "per_class": target, "limits": limits}

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        if table.num_rows == 0:
            return table
        labels = self._labels(table)
        k = rank_keys(table.column("id").to_pylist(), self.seed)
        limits = state["limits"]
        keep = np.ones(table.num_rows, bool)
        for i, lab in enumerate(labels):
            if lab is None:
                keep[i] = self.missing == "keep"
            elif lab in limits and limits[lab] is not None:
                keep[i] = int(k[i]) <= int(limits[lab])
        return table.filter(pa.array(keep, pa.bool_()))
