"""What the image feature steps share: decoding the ``image`` column and writing feature columns.

An image step reads a binary column of encoded images (PNG, JPEG, anything Pillow opens) and adds
top-level columns (``features/_media.py``): dense vectors as ``fixed_size_list<float32>[d]``,
scalars as float32 or int32. A row whose column is null gets nulls; a row whose bytes do not decode is quarantined as
``bad_image`` (the Map family's rule for a problem of one record).
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import ConfigError, RecordError
from genloom.core.steps import Map, StepContext
from genloom.features._media import PartKind, add_parts, run_per_row


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
