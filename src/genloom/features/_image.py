"""What the image feature steps share: decoding the ``image`` column and writing feature columns.

An image step reads a binary column of encoded images (PNG, JPEG, anything Pillow opens) and adds
top-level columns: dense vectors as ``fixed_size_list<float32>[d]``, scalars as float32 or
int32. A row whose column is null gets nulls; a row whose bytes do not decode is quarantined as
``bad_image`` (the Map family's rule for a problem of one record).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import ConfigError, RecordError, StepError
from genloom.core.steps import Map, StepContext

#: how a part of a step's output is stored: ("vector", d) | ("float",) | ("int",) | ("list2",)
PartKind = tuple[Any, ...]


def decode_image(data: bytes, mode: str = "L") -> np.ndarray:
    """Encoded image bytes to an array: ``L`` gives (H, W) float64 in [0, 1], ``RGB`` (H, W, 3).

    Raises RecordError ``bad_image`` when Pillow cannot read the bytes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("P", "LA", "PA") or (im.mode == "RGBA" and mode == "RGB"):
                im = im.convert("RGBA").convert(mode)  # palette and alpha over black
            elif im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im, dtype=np.float64)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise RecordError("bad_image", f"{type(e).__name__}: {e}"[:500]) from e
    if arr.size == 0:
        raise RecordError("bad_image", "the image has no pixels")
    return arr / 255.0


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resampled to (height, width) with anti-aliasing (scikit-image)."""
    from skimage.transform import resize as sk_resize

    if image.shape[:2] == size:
        return image
    return np.asarray(sk_resize(image, size, anti_aliasing=True, preserve_range=True))


def block_means(values: np.ndarray, grid: int) -> np.ndarray:
    """The mean of ``values`` (H, W) over a ``grid`` x ``grid`` array of blocks, row-major."""
    h, w = values.shape
    rows = np.array_split(np.arange(h), grid)
    cols = np.array_split(np.arange(w), grid)
    out = np.zeros((grid, grid))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if len(r) and len(c):
                out[i, j] = values[np.ix_(r, c)].mean()
    return out.ravel()


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
    step: Map,
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


class ImageFeature(Map):
    """Base of the image feature steps: ``features(image)`` per decoded image, columns by ``parts()``."""

    column: str = Field(
        default="image", description="the binary column holding encoded images (PNG, JPEG...)"
    )
    output: str | None = Field(
        default=None, description="name (prefix) of the output columns; default: the step's type"
    )

    #: the colour mode the step decodes images to: L (grey, (H, W)) or RGB ((H, W, 3))
    mode: ClassVar[str] = "L"
    requires: ClassVar[tuple[str, ...]] = ("skimage", "PIL")
    extra: ClassVar[str] = "image"

    @property
    def out(self) -> str:
        """The output column name (prefix)."""
        return self.output or self.type

    def parts(self) -> dict[str, PartKind]:
        """Output parts and their kinds (``""`` names the column ``<output>`` itself)."""
        raise NotImplementedError

    def features(self, image: np.ndarray) -> dict[str, Any]:
        """The features of one decoded image, one value per part."""
        raise NotImplementedError

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        """Decode each image, compute its features, add the columns."""
        kept, rows = run_per_row(
            self, table, ctx, self.column, lambda b: self.features(decode_image(b, self.mode))
        )
        return add_parts(kept, self.out, self.parts(), rows)


def check_size(size: tuple[int, int] | None, path: str) -> None:
    """A resize target must be at least 8 x 8 pixels."""
    if size is not None and min(size) < 8:
        raise ConfigError(f"size {list(size)} is too small", path=f"{path}.size", hint="at least [8, 8]")
