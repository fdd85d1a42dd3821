"""Missing values: drop or impute per column; empty or whitespace-only text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from genloom.core.errors import ConfigError
from genloom.core.registry import CLEANERS
from genloom.core.steps import Fitted

Strategy = Literal["drop", "mean", "median", "mode", "constant", "ffill", "bfill", "interpolate"]
_GLOBAL = ("mean", "median", "mode")


@CLEANERS.register("missing")
class MissingValues(Fitted):
    """Drop or fill missing values per column, and drop records whose text is empty or blank.

    A value is missing when it is null, NaN, or (string columns) one of ``na_values`` after
    trimming. Per column (``columns: {age: median, city: mode, score: constant}``): ``drop`` the
    record (counted as ``missing``); fill with the ``mean``/``median`` (numeric) or ``mode`` of the
    whole input, learnt by the fit; ``constant`` from ``fill_values``; ``ffill``/``bfill`` copy the
    previous/next value and ``interpolate`` draws a straight line between neighbours (numeric), in
    row order across the whole input: use these for series whose rows arrive in time order. A gap
    at a shard boundary is filled from the neighbouring shards (the fit records, per shard, the
    last value before it and the first after it), so sharding does not change the result. ``text_column`` empty or
    whitespace-only is dropped (``empty_text: drop``), kept, or set to ``text_fill``. The state holds
    the fill values and a report of how many values each column was missing in the fit's input.
    Vectorised (pyarrow.compute); the median keeps one column of numbers in memory during the fit.
    """

    type: Literal["missing"] = "missing"
    columns: dict[str, Strategy] = Field(default_factory=dict)
    fill_values: dict[str, Any] = Field(default_factory=dict)
    na_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "None", "?"]
    )
    text_column: str | None = "text"
    empty_text: Literal["drop", "keep", "fill"] = "drop"
    text_fill: str = ""
    drop_reason: ClassVar[str] = "missing"

    def check(self, path: str) -> None:
        for col, strategy in self.columns.items():
            if strategy == "constant" and col not in self.fill_values:
                raise ConfigError(
                    f"column {col!r} uses 'constant' but has no fill value", path=f"{path}.fill_values"
                )

    def missing_mask(self, arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        """True where a value is missing."""
        mask = pc.is_null(arr, nan_is_null=True)
        if self.na_values and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            na = pa.array(self.na_values, pa.string())
            mask = pc.or_(mask, pc.fill_null(pc.is_in(pc.utf8_trim_whitespace(arr), na), False))
        return mask

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        missing: Counter[str] = Counter()
        rows = 0
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        values: dict[str, list[np.ndarray]] = {}
        modes: dict[str, Counter[Any]] = {}
        series = [c for c, s in self.columns.items() if s in ("ffill", "bfill", "interpolate")]
        edges = _SeriesEdges(series)
        for table in tables:
            series_masks = {}
            rows += table.num_rows
            for col, strategy in self.columns.items():
                if col not in table.column_names:
                    continue
                arr = table.column(col)
                mask = self.missing_mask(arr)
                if col in series:
                    series_masks[col] = mask
                missing[col] += int(pc.sum(mask).as_py() or 0)
                present = arr.filter(pc.invert(mask))
                if strategy == "mean":
                    sums[col] = sums.get(col, 0.0) + float(pc.sum(present).as_py() or 0.0)
                    counts[col] = counts.get(col, 0) + len(present)
                elif strategy == "median":
                    values.setdefault(col, []).append(present.to_numpy().astype(np.float64))
                elif strategy == "mode":
                    vc = pc.value_counts(present)
                    modes.setdefault(col, Counter()).update(
                        dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))
                    )
            if self.text_column and self.text_column in table.column_names:
                missing[self.text_column] += int(pc.sum(self._empty_text(table)).as_py() or 0)
            edges.add(table, series_masks)
        fill: dict[str, Any] = {}
        for col, strategy in self.columns.items():
            if strategy == "mean" and counts.get(col):
                fill[col] = sums[col] / counts[col]
            elif strategy == "median" and values.get(col):
                fill[col] = float(np.median(np.concatenate(values[col])))
            elif strategy == "mode" and modes.get(col):
                # ties: the smallest value, so the choice does not depend on batch order
                top = max(modes[col].values())
                fill[col] = min(v for v, c in modes[col].items() if c == top)
            elif strategy == "constant":
                fill[col] = self.fill_values[col]
        report = {
            col: {"missing": missing.get(col, 0), "strategy": s, "fill": fill.get(col)}
            for col, s in self.columns.items()
        }
        if self.text_column:
            report[self.text_column] = {
                "missing": missing.get(self.text_column, 0),
                "strategy": self.empty_text,
            }
        return {"fill": fill, "rows": rows, "report": report, "edges": edges.edges}

    def _empty_text(self, table: pa.Table) -> pa.ChunkedArray:
        col = table.column(self.text_column)
        return pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        keep = pa.chunked_array([pa.array(np.ones(table.num_rows, dtype=bool))])
        fill = state["fill"]
        for col, strategy in self.columns.items():
            if col not in table.column_names:
                continue
            arr = table.column(col)
            mask = self.missing_mask(arr)
            if strategy == "drop":
                keep = pc.and_(keep, pc.invert(mask))
                continue
            nulled = pc.if_else(mask, pa.scalar(None, arr.type), arr)
            if strategy in ("ffill", "bfill", "interpolate"):
                before, after = _edge_values(state.get("edges", {}), table, col)
                new = _fill_series(nulled, strategy, before, after)
            elif col in fill:
                value = fill[col]
                target = (
                    pa.float64() if isinstance(value, float) and pa.types.is_integer(arr.type) else arr.type
                )
                new = pc.fill_null(nulled.cast(target), pa.scalar(value).cast(target))
            else:
                continue
            table = table.set_column(table.column_names.index(col), col, new)
        if self.text_column and self.text_column in table.column_names and self.empty_text != "keep":
            empty = self._empty_text(table)
            if self.empty_text == "drop":
                keep = pc.and_(keep, pc.invert(empty))
            else:
                i = table.column_names.index(self.text_column)
                table = table.set_column(
                    i, self.text_column, pc.if_else(empty, pa.scalar(self.text_fill), table.column(i))
                )
        return table.filter(keep)


Edge = tuple[Any, int] | None  # (a present value, its distance in rows from the shard's edge)


class _SeriesEdges:
    """Per shard (keyed by its first id): the last present value before it and the first after it."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.offset = 0  # rows seen before the current table
        self.last: dict[str, tuple[Any, int]] = {}  # column -> (value, global row)
        self.pending: dict[str, list[tuple[str, int]]] = {c: [] for c in columns}  # (key, end row)
        self.edges: dict[str, dict[str, list[Edge]]] = {}

    def add(self, table: pa.Table, masks: dict[str, Any]) -> None:
        """Records ``table``'s edges; ``masks``: the missing-value mask of each series column in it."""
        if not self.columns or table.num_rows == 0 or "id" not in table.column_names:
            self.offset += table.num_rows
            return
        key = str(table.column("id")[0].as_py())
        start, end = self.offset, self.offset + table.num_rows
        for col, mask in masks.items():
            edge = self.edges.setdefault(key, {}).setdefault(col, [None, None])
            if col in self.last:
                value, row = self.last[col]
                edge[0] = (value, start - row)
            present = np.flatnonzero(~np.asarray(mask.to_numpy(zero_copy_only=False)))
            if len(present):
                values = table.column(col)
                first, last = int(present[0]), int(present[-1])
                for k, k_end in self.pending[col]:  # earlier shards waiting for their next value
                    self.edges[k][col][1] = (values[first].as_py(), start + first - k_end + 1)
                self.pending[col] = []
                self.last[col] = (values[last].as_py(), start + last)
            self.pending[col].append((key, end))
        self.offset = end


def _edge_values(edges: dict[str, Any], table: pa.Table, col: str) -> tuple[Edge, Edge]:
    if not edges or table.num_rows == 0 or "id" not in table.column_names:
        return None, None
    found = edges.get(str(table.column("id")[0].as_py()), {}).get(col)
    if not found:
        return None, None
    before, after = found
    return (tuple(before) if before else None), (tuple(after) if after else None)


def _fill_series(arr: pa.ChunkedArray, strategy: str, before: Edge, after: Edge) -> pa.Array:
    """ffill / bfill / interpolate ``arr``, seeing the neighbouring shards' values ``before``/``after``."""
    if strategy == "ffill":
        if before is None:
            return pc.fill_null_forward(arr)
        head = pa.array([before[0]]).cast(arr.type)
        return pc.fill_null_forward(pa.chunked_array([head, *arr.chunks], arr.type))[1:]
    if strategy == "bfill":
        if after is None:
            return pc.fill_null_backward(arr)
        tail = pa.array([after[0]]).cast(arr.type)
        return pc.fill_null_backward(pa.chunked_array([*arr.chunks, tail], arr.type))[:-1]
    return _interpolate(arr, before, after)


def _interpolate(arr: pa.ChunkedArray, before: Edge = None, after: Edge = None) -> pa.Array:
    """Linear interpolation over the row index; gaps at the ends of the whole input take the nearest value."""
    y = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~np.isnan(y)
    x = np.arange(len(y), dtype=np.float64)
    xp, fp = x[ok], y[ok]
    if before is not None:
        xp, fp = np.concatenate([[-float(before[1])], xp]), np.concatenate([[float(before[0])], fp])
    if after is not None:
        xp = np.concatenate([xp, [len(y) - 1 + float(after[1])]])
        fp = np.concatenate([fp, [float(after[0])]])
    if len(xp) == 0:
        return pa.array(y)
    y[~ok] = np.interp(x[~ok], xp, fp)
    return pa.array(y)
