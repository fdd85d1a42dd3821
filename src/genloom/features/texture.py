"""Texture features of images: a local binary pattern histogram and Gabor filter energies."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._image import ImageFeature, check_size, resize
from genloom.features._media import PartKind


@FEATURES.register("texture")
class TextureFeature(ImageFeature):
    """Texture of each image (grey levels), by scikit-image.

    ``<output>_lbp``: the normalised histogram of uniform, rotation-invariant local binary
    patterns (Ojala, Pietikainen and Maenpaa 2002) with ``points`` neighbours on a circle of
    ``radius`` pixels, over the pixels at least ``radius`` from the border: ``points + 2`` bins
    summing to 1. ``<output>_gabor``: the mean magnitude of
    the image filtered by a Gabor kernel at each of ``frequencies`` (cycles per pixel) and
    ``orientations`` angles evenly spread over [0, pi), frequency-major
    (``len(frequencies) * orientations`` values). Images are resized to ``size`` first (Gabor
    filtering costs grow with the pixel count).
    """

    type: Literal["texture"] = "texture"
    points: int = Field(default=8, ge=4, le=32, description="LBP: neighbours sampled on the circle")
    radius: float = Field(default=1.0, gt=0, description="LBP: the circle's radius in pixels")
    frequencies: list[float] = Field(
        default=[0.1, 0.25, 0.4], min_length=1, description="Gabor: spatial frequencies, cycles per pixel"
    )
    orientations: int = Field(default=4, ge=1, le=16, description="Gabor: angles per frequency")
    size: tuple[int, int] | None = Field(
        default=(64, 64), description="resize every image to [height, width] first; null: as it is"
    )

    def check(self, path: str) -> None:
        check_size(self.size, path)

    def parts(self) -> dict[str, PartKind]:
        return {
            "lbp": ("vector", self.points + 2),
            "gabor": ("vector", len(self.frequencies) * self.orientations),
        }

    def features(self, image: np.ndarray) -> dict[str, Any]:
        from skimage.feature import local_binary_pattern
        from skimage.filters import gabor

        if self.size is not None:
            image = resize(image, self.size)
        grey = np.round(image * 255).astype(np.uint8)  # LBP compares integer levels
        codes = local_binary_pattern(grey, self.points, self.radius, method="uniform")
        border = int(np.ceil(self.radius))  # their neighbours fall outside: compared with 0
        if min(codes.shape) > 2 * border:
            codes = codes[border:-border, border:-border]
        hist = np.bincount(codes.astype(np.int64).ravel(), minlength=self.points + 2)[: self.points + 2]
        energies = []
        for f in self.frequencies:
            for i in range(self.orientations):
                real, imag = gabor(image, frequency=f, theta=np.pi * i / self.orientations)
                energies.append(float(np.hypot(real, imag).mean()))
        return {"lbp": hist / max(hist.sum(), 1), "gabor": np.array(energies)}
