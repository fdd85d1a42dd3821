"""One-hot vectors: the tokens present in a record, or the category of a categorical column."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._vectorize import CategoryAnalyzer, VectorizerStep, Weighting


@FEATURES.register("one_hot")
class OneHotFeature(VectorizerStep):
    """Add a one-hot (multi-hot) vector per record (column ``one_hot``: sparse ``struct<indices, values>``).

    ``mode: tokens`` (default): 1 for every vocabulary token present in the text (or in a
    ``list<string>`` token column such as ``tokens``), scikit-learn's ``CountVectorizer(binary=True)``.
    ``mode: categorical``: the whole value of ``column`` (a string, int or bool column such as
    ``label`` or ``source``) is one category, and the vector has a single 1 at its index: the
    categories are the values seen by the fit, sorted, pruned by ``min_df`` / ``max_features``
    (the rarest fall out); a value not in them, or null, gives an all-zero vector. The vocabulary
    (tokens or categories) is counted shard by shard in one pass and is the state artifact. Set
    ``dense: true`` for a ``fixed_size_list<float32>[d]`` column (handy for a few categories).
    Drops nothing.
    """

    type: Literal["one_hot"] = "one_hot"
    mode: Literal["tokens", "categorical"] = Field(
        "tokens", description="tokens: multi-hot of the tokens present; categorical: one-hot of the value"
    )
    lowercase: bool = Field(True, description="Lowercase tokens (mode tokens) or categories before use")

    def current_weighting(self) -> Weighting:
        return "binary"

    def _analyzer_for(self, column_type: pa.DataType) -> Any:
        if self.mode == "categorical":
            return CategoryAnalyzer(self.lowercase)
        return super()._analyzer_for(column_type)

    def _joined_ok(self, column_type: pa.DataType) -> bool:
        return self.mode != "categorical" and super()._joined_ok(column_type)

    def _documents(self, table: pa.Table) -> tuple[list[Any], pa.DataType]:
        if self.mode != "categorical":
            return super()._documents(table)
        values, col_type = super()._documents(table)
        if pa.types.is_string(col_type) or pa.types.is_large_string(col_type):
            original = table.column(self.column).to_pylist()  # null stays null: no category
            values = [None if o is None else v for o, v in zip(original, values, strict=True)]
        return values, col_type
