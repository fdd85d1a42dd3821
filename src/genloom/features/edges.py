"""Edge features of images: Canny edge density and Sobel gradient magnitude statistics."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._image import ImageFeature, block_means, check_size, resize
from genloom.features._media import PartKind


@FEATURES.register("edges")
class EdgesFeature(ImageFeature):
    """Edges of each image (grey levels in [0, 1]), by scikit-image.

    Adds ``<output>_density`` (the fraction of pixels Canny marks as edges: Canny 1986, Gaussian
    ``sigma``, hysteresis between ``low_threshold`` and ``high_threshold``), ``<output>_sobel_mean``,
    ``<output>_sobel_std`` and ``<output>_sobel_max`` (the Sobel gradient magnitude over the image),
    and with ``map_size: N`` ``<output>_map``, the Canny edge density in an N x N grid of blocks
    (row-major, ``fixed_size_list<float32>[N*N]``). A blank image has no edges (density 0).
    """

    type: Literal["edges"] = "edges"
    sigma: float = Field(default=1.0, gt=0, description="standard deviation of Canny's Gaussian smoothing")
    low_threshold: float | None = Field(
        default=None,
        ge=0,
        description="Canny's lower hysteresis threshold on the gradient (default: 0.1 x the image's dtype max)",
    )
    high_threshold: float | None = Field(
        default=None,
        ge=0,
        description="Canny's upper hysteresis threshold (default: 0.2 x the image's dtype max)",
    )
    size: tuple[int, int] | None = Field(
        default=None, description="resize every image to [height, width] first (default: as it is)"
    )
    map_size: int | None = Field(
        default=None, ge=1, le=64, description="also write the edge density in a map_size x map_size grid"
    )

    def check(self, path: str) -> None:
        check_size(self.size, path)

    def parts(self) -> dict[str, PartKind]:
        kinds: dict[str, PartKind] = {
            "density": ("float",),
            "sobel_mean": ("float",),
            "sobel_std": ("float",),
            "sobel_max": ("float",),
        }
        if self.map_size:
            kinds["map"] = ("vector", self.map_size * self.map_size)
        return kinds

    def features(self, image: np.ndarray) -> dict[str, Any]:
        from skimage.feature import canny
        from skimage.filters import sobel

        if self.size is not None:
            image = resize(image, self.size)
        edges = canny(
            image, sigma=self.sigma, low_threshold=self.low_threshold, high_threshold=self.high_threshold
        )
        magnitude = sobel(image)
        out: dict[str, Any] = {
            "density": float(edges.mean()),
            "sobel_mean": float(magnitude.mean()),
            "sobel_std": float(magnitude.std()),
            "sobel_max": float(magnitude.max()),
        }
        if self.map_size:
            out["map"] = block_means(edges.astype(np.float64), self.map_size)
        return out
