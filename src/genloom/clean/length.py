"""Length filter on the text column."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.registry import CLEANERS
from genloom.core.steps import Filter


@CLEANERS.register("length")
class LengthFilter(Filter):
    """Drop records whose text is shorter than ``min_chars`` or longer than ``max_chars``.

    Counts drops as ``too_short`` and ``too_long``; null text counts as empty. Vectorised.
    """

    type: Literal["length"] = "length"
    min_chars: int = 1
    max_chars: int | None = None
    column: str = "text"

    def reject_batch(self, table: pa.Table) -> list[str | None]:
        n = pc.fill_null(pc.utf8_length(table.column(self.column)), 0).to_numpy(zero_copy_only=False)
        out: list[str | None] = [None] * len(n)
        for i, length in enumerate(n):
            if length < self.min_chars:
                out[i] = "too_short"
            elif self.max_chars is not None and length > self.max_chars:
                out[i] = "too_long"
        return out
