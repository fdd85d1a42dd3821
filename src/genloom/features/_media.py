"""What the media feature steps (image, audio, series) share: per-row computation with
quarantine, and feature columns in the conventions' Arrow types.

Dense vectors are ``fixed_size_list<float32>[d]``, scalars float32 or int32, labels strings, a
per-frame matrix ``list<fixed_size_list<float32>[d]>`` (time-major), a variable list of pairs
``list<fixed_size_list<float32>[2]>``, a list of positions ``list<int32>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from genloom.core.errors import RecordError, StepError
from genloom.core.steps import Step, StepContext

#: how a part of a step's output is stored: ("vector", d) | ("float",) | ("int",) | ("list2",)
PartKind = tuple[Any, ...]


def arrow_part(kind: PartKind, values: list[Any]) -> pa.Array:
    """One output column from per-row values (None: a null) of the given kind."""
    if kind[0] == "vector":
        d = int(kind[1])
        flat = np.zeros(len(values) * d, dtype=np.float32)
        valid = np.array([v is not None for v in values], dtype=bool)
        for i, v in enumerate(values):
            if v is not None:
                flat[i * d : (i + 1) * d] = np.asarray(v, dtype=np.float32).ravel()
        child = pa.array(flat, pa.float32())
        return pa.FixedSizeListArray.from_arrays(child, d, mask=pa.array(~valid))
    if kind[0] == "float":
        return pa.array([None if v is None else float(v) for v in values], pa.float32())
    if kind[0] == "int":
        return pa.array([None if v is None else int(v) for v in values], pa.int32())
    if kind[0] == "list2":  # a variable number of (y, x) or (a, b) pairs
        pair = pa.list_(pa.float32(), 2)
        return pa.array(
            [None if v is None else [[float(a), float(b)] for a, b in v] for v in values], pa.list_(pair)
        )
    if kind[0] == "frames":  # a (T, d) matrix per row, time-major: list<fixed_size_list<float32>[d]>
        d = int(kind[1])
        mats = [
            np.zeros((0, d), np.float32) if v is None else np.asarray(v, np.float32).reshape(-1, d)
            for v in values
        ]
        offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in mats])]).astype(np.int32)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(mats).ravel(), pa.float32()), d)
        nulls = pa.array([v is None for v in values])
        return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=nulls)
    if kind[0] == "intlist":
        return pa.array([None if v is None else [int(x) for x in v] for v in values], pa.list_(pa.int32()))
    if kind[0] == "string":
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    raise ValueError(f"unknown part kind {kind!r}")


def add_parts(
    table: pa.Table, output: str, kinds: dict[str, PartKind], rows: list[dict[str, Any] | None]
) -> pa.Table:
    """``table`` with one column per part (``<output>`` for the part ``""``, else ``<output>_<part>``)."""
    for part, kind in kinds.items():
        name = output if not part else f"{output}_{part}"
        col = arrow_part(kind, [None if r is None else r[part] for r in rows])
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, col)
        else:
            table = table.append_column(name, col)
    return table


def run_per_row(
    step: Step,
    table: pa.Table,
    ctx: StepContext,
    column: str,
    compute: Callable[[Any], dict[str, Any]],
) -> tuple[pa.Table, list[dict[str, Any] | None]]:
    """Call ``compute(payload)`` for every row of ``column``; a RecordError quarantines the row.

    Returns the rows kept and their results (None where the payload is null)."""
    if column not in table.column_names:
        raise StepError(
            f"the records have no column {column!r} (they have {', '.join(table.column_names)}): "
            "set the step's `column` option"
        )
    payloads = table.column(column).to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else [""] * table.num_rows
    keep: list[bool] = []
    results: list[dict[str, Any] | None] = []
    for rid, payload in zip(ids, payloads, strict=True):
        if payload is None:
            keep.append(True)
            results.append(None)
            continue
        try:
            results.append(compute(payload))
            keep.append(True)
        except RecordError as e:
            ctx.reject(step.name, rid or "", e.reason, "", e.detail)
            keep.append(False)
    if not all(keep):
        table = table.filter(pa.array(keep, pa.bool_()))
    return table, results
