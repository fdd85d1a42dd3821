"""Histogram of oriented gradients (HOG) of images, as one fixed-size vector."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.errors import ConfigError
from genloom.core.registry import FEATURES
from genloom.features._image import ImageFeature, check_size, resize
from genloom.features._media import PartKind


@FEATURES.register("hog")
class HogFeature(ImageFeature):
    """HOG descriptor of each image (Dalal and Triggs 2005; scikit-image's ``hog``).

    Every image is resized to ``size`` first, so the vector ``<output>`` has the same length for
    all: ``blocks_y * blocks_x * cells_per_block^2 * orientations``, where ``blocks_y =
    height // pixels_per_cell - cells_per_block + 1`` (1764 for the default 64 x 64, 8-pixel
    cells, 2 x 2 blocks, 9 orientations). Blocks are L2-Hys normalised.
    """

    type: Literal["hog"] = "hog"
    size: tuple[int, int] = Field(default=(64, 64), description="every image is resized to [height, width]")
    orientations: int = Field(default=9, ge=2, le=36, description="orientation bins per cell")
    pixels_per_cell: int = Field(default=8, ge=2, description="cell side in pixels")
    cells_per_block: int = Field(default=2, ge=1, description="block side in cells")

    def check(self, path: str) -> None:
        check_size(self.size, path)
        if self.dimension() <= 0:
            raise ConfigError(
                f"size {list(self.size)} holds no {self.cells_per_block}x{self.cells_per_block} block "
                f"of {self.pixels_per_cell}-pixel cells",
                path=f"{path}.size",
                hint="a larger size or smaller cells",
            )

    def dimension(self) -> int:
        """The length of the HOG vector for this config."""
        by = self.size[0] // self.pixels_per_cell - self.cells_per_block + 1
        bx = self.size[1] // self.pixels_per_cell - self.cells_per_block + 1
        return max(by, 0) * max(bx, 0) * self.cells_per_block**2 * self.orientations

    def parts(self) -> dict[str, PartKind]:
        return {"": ("vector", self.dimension())}

    def features(self, image: np.ndarray) -> dict[str, Any]:
        from skimage.feature import hog

        vec = hog(
            resize(image, self.size),
            orientations=self.orientations,
            pixels_per_cell=(self.pixels_per_cell, self.pixels_per_cell),
            cells_per_block=(self.cells_per_block, self.cells_per_block),
            block_norm="L2-Hys",
            feature_vector=True,
        )
        return {"": vec}
