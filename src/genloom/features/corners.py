"""Corner features of images: Harris corners, their count and where they lie."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._image import ImageFeature, check_size, resize
from genloom.features._media import PartKind


@FEATURES.register("corners")
class CornersFeature(ImageFeature):
    """Harris corners of each image (Harris and Stephens 1988; scikit-image's ``corner_harris``
    and ``corner_peaks``).

    Adds ``<output>_count`` (int32), ``<output>_mean_y`` and ``<output>_mean_x`` (the corners'
    centroid as a fraction of the height and width, null without corners), ``<output>_spread``
    (the corners' mean distance from their centroid, as a fraction of the image diagonal) and
    ``<output>_positions``: up to ``max_positions`` corners as (row, column) pixel pairs of the
    (resized) image, strongest first. A white square drawn on black has 4 corners, at its corners.
    """

    type: Literal["corners"] = "corners"
    k: float = Field(default=0.05, gt=0, lt=0.25, description="Harris's sensitivity factor k")
    sigma: float = Field(default=1.0, gt=0, description="Gaussian window of the structure tensor")
    min_distance: int = Field(default=3, ge=1, description="minimum pixels between two corners")
    threshold_rel: float = Field(
        default=0.1, gt=0, le=1, description="a corner's response must reach this fraction of the strongest"
    )
    max_positions: int = Field(default=32, ge=0, le=4096, description="corners kept in <output>_positions")
    size: tuple[int, int] | None = Field(
        default=None, description="resize every image to [height, width] first (default: as it is)"
    )

    def check(self, path: str) -> None:
        check_size(self.size, path)

    def parts(self) -> dict[str, PartKind]:
        return {
            "count": ("int",),
            "mean_y": ("float",),
            "mean_x": ("float",),
            "spread": ("float",),
            "positions": ("list2",),
        }

    def features(self, image: np.ndarray) -> dict[str, Any]:
        from skimage.feature import corner_harris, corner_peaks

        if self.size is not None:
            image = resize(image, self.size)
        response = corner_harris(image, k=self.k, sigma=self.sigma)
        peaks = np.zeros((0, 2), dtype=np.int64)
        if response.max() > 0:
            peaks = corner_peaks(response, min_distance=self.min_distance, threshold_rel=self.threshold_rel)
        h, w = image.shape
        n = len(peaks)
        strongest = peaks[np.argsort(-response[peaks[:, 0], peaks[:, 1]], kind="stable")] if n else peaks
        out: dict[str, Any] = {"count": n, "mean_y": None, "mean_x": None, "spread": None}
        if n:
            centre = peaks.mean(axis=0)
            out["mean_y"] = centre[0] / max(h - 1, 1)
            out["mean_x"] = centre[1] / max(w - 1, 1)
            out["spread"] = float(np.linalg.norm(peaks - centre, axis=1).mean() / np.hypot(h, w))
        out["positions"] = [(int(y), int(x)) for y, x in strongest[: self.max_positions]]
        return out
