"""Colour histograms of images, per channel (RGB or HSV)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._image import ImageFeature
from genloom.features._media import PartKind


@FEATURES.register("color_histogram")
class ColorHistogramFeature(ImageFeature):
    """Per-channel histograms of each image's colours.

    Images are decoded as RGB (a grey image gives three equal channels; transparency is
    composited on black); with ``space: hsv`` they are converted to hue, saturation and value
    (scikit-image's ``rgb2hsv``). ``<output>``: ``bins`` equal-width bins over [0, 1] per channel,
    each channel's histogram summing to 1, channel-major (``3 * bins`` values);
    ``<output>_mean``: the mean of each channel (3 values).
    """

    type: Literal["color_histogram"] = "color_histogram"
    bins: int = Field(default=16, ge=2, le=256, description="bins per channel")
    space: Literal["rgb", "hsv"] = Field(default="rgb", description="the colour space of the channels")

    mode: ClassVar[str] = "RGB"

    def parts(self) -> dict[str, PartKind]:
        return {"": ("vector", 3 * self.bins), "mean": ("vector", 3)}

    def features(self, image: np.ndarray) -> dict[str, Any]:
        if self.space == "hsv":
            from skimage.color import rgb2hsv

            image = rgb2hsv(image)
        pixels = image.reshape(-1, 3)
        hists = []
        for c in range(3):
            # bin of each value; 1.0 falls in the last bin
            idx = np.minimum((pixels[:, c] * self.bins).astype(np.int64), self.bins - 1)
            counts = np.bincount(idx, minlength=self.bins)
            hists.append(counts / max(counts.sum(), 1))
        return {"": np.concatenate(hists), "mean": pixels.mean(axis=0)}
