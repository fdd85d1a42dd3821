"""Lowercasing (or Unicode case folding) of a text column."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column


@PREPROCESSORS.register("lowercase")
class LowercaseMap(Map):
    """Lowercase the text (Unicode-aware, vectorised); ``casefold: true`` also folds ``ß`` to ``ss``.

    Changes the text in place or writes ``output_column``; a list-of-tokens column is lowercased
    token by token. Drops nothing.
    """

    type: Literal["lowercase"] = "lowercase"
    column: str = "text"
    output_column: str | None = None
    casefold: bool = False

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        col = table.column(self.column)
        is_list = pa.types.is_list(col.type)
        if is_list:
            col = col.combine_chunks()
            # offsets of a sliced list array do not start at 0: flatten() honours the slice
            col = pa.ListArray.from_arrays(
                pc.subtract(col.offsets, col.offsets[0]), col.flatten(), mask=col.is_null()
            )
        flat = col.flatten() if is_list else col
        if self.casefold:
            flat = pa.array([None if t is None else t.casefold() for t in flat.to_pylist()], pa.string())
        else:
            flat = pc.utf8_lower(flat)
        if is_list:
            flat = pa.ListArray.from_arrays(col.offsets, flat, mask=col.is_null())
        return write_column(table, self.output_column or self.column, flat)
