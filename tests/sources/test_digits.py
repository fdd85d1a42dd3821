"""digits: scikit-learn's bundled 8 x 8 digits as image records (no download)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from genloom.sources.digits import DigitsSource

from .sources_fixtures import read_all

pytest.importorskip("sklearn")
Image = pytest.importorskip("PIL.Image")


def test_all_1797_digits_as_png_records() -> None:
    from sklearn.datasets import load_digits

    rows, rejected = read_all(DigitsSource())
    assert len(rows) == 1797 and not rejected
    assert len({r["id"] for r in rows}) == 1797 and rows[0]["id"] == "digits:0"
    assert sorted({r["label"] for r in rows}) == [str(k) for k in range(10)]
    d = load_digits()
    for i in (0, 500, 1796):
        img = Image.open(io.BytesIO(rows[i]["image"]))
        assert img.format == "PNG" and img.mode == "L" and img.size == (8, 8)
        # the 17 levels scaled to 0..255, exactly
        assert np.array_equal(np.asarray(img), np.uint8(np.round(d.images[i] * 255 / 16)))
        assert rows[i]["label"] == str(d.target[i])
        assert (rows[i]["width"], rows[i]["height"]) == (8, 8)


def test_limit_and_invert() -> None:
    rows, _ = read_all(DigitsSource(limit=3))
    inv, _ = read_all(DigitsSource(limit=3, invert=True))
    assert len(rows) == 3
    a = np.asarray(Image.open(io.BytesIO(rows[1]["image"])))
    b = np.asarray(Image.open(io.BytesIO(inv[1]["image"])))
    assert np.array_equal(a, 255 - b)
