"""scikit-learn's bundled handwritten digits (8 x 8, 1,797 images; no download) as image records."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import MissingDependencyError
from genloom.core.records import records_to_table
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources.image_folder import IMAGE_SCHEMA, image_record

N_DIGITS = 1797  # images in sklearn.datasets.load_digits (UCI's optical recognition test set)


def _load_digits() -> Any:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise MissingDependencyError(
            "scikit-learn (the digits source)", "pip install 'genloom[tabular]'"
        ) from e
    return load_digits()


@SOURCES.register("digits")
class DigitsSource(Source):
    """The 1,797 handwritten digits scikit-learn ships (UCI "Optical Recognition of Handwritten
    Digits": 8 x 8 images, 17 grey levels, 43 writers), the built-in image demo: nothing is
    downloaded. One record per image, as ``image_folder`` writes them: ``image`` (an 8 x 8
    grayscale PNG, the levels 0..16 scaled to 0..255, ink dark on white with ``invert``),
    ``label`` (the digit, ``"0"`` .. ``"9"``), ``width``, ``height``; id ``digits:<index>``
    (the position in scikit-learn's array, stable across versions)."""

    type: Literal["digits"] = "digits"
    limit: int | None = Field(
        default=None, ge=1, description="read only the first N images (all 1,797 by default)"
    )
    invert: bool = Field(
        default=False, description="dark digits on white (scikit-learn's are light on black)"
    )

    def setup(self) -> None:
        _load_digits()  # a missing scikit-learn fails before any partition

    def resource_versions(self) -> dict[str, str]:
        """scikit-learn's version (the data ships with it)."""
        from importlib import metadata

        try:
            return {"scikit-learn": metadata.version("scikit-learn")}
        except metadata.PackageNotFoundError:
            return {"scikit-learn": "not installed"}

    def fingerprint(self) -> str:
        return f"digits:{self.limit}:{self.invert}"

    def read(self, partition: Any) -> Iterator[pa.Table]:
        import numpy as np
        from PIL import Image

        digits = _load_digits()
        n = min(self.limit or N_DIGITS, len(digits.images))
        records = []
        for i in range(n):
            levels = np.asarray(digits.images[i], dtype=np.float64)  # (8, 8) in 0..16
            pixels = np.uint8(np.round(levels * 255.0 / 16.0))
            if self.invert:
                pixels = 255 - pixels
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            meta = {"dataset": "sklearn.datasets.load_digits", "index": i}
            records.append(
                image_record(self.type, str(i), buf.getvalue(), str(int(digits.target[i])), 8, 8, meta)
            )
        yield records_to_table(records, IMAGE_SCHEMA)
