"""What the image families share: decoding, cropping and resizing, scaling, the label vocabulary,
PNG and grid output, the Fréchet distance, and prepare on image records (bytes or paths)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genloom.models.base import PrepareInput
from genloom.models.image_data import (
    ImageGANConfig,
    ImageLayout,
    decode_image,
    encode_png,
    frechet_distance,
    image_grid,
    pooled_features,
    sort_labels,
    to_pixels,
    to_unit,
    write_images,
)

Image = pytest.importorskip("PIL.Image")


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_crops_the_centre_square_and_resizes() -> None:
    wide = np.zeros((8, 24), np.uint8)
    wide[:, 8:16] = 255  # the white centre square of a wide image
    out = decode_image(png(wide), 8, 1)
    assert out.shape == (1, 8, 8) and out.dtype == np.uint8 and (out == 255).all()
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    out = decode_image(png(rgb), 16, 3)
    assert out.shape == (3, 16, 16) and (out[0] == 200).all() and (out[1:] == 0).all()
    assert decode_image(png(rgb), 16, 1).shape == (1, 16, 16)  # to grayscale


def test_transparent_pixels_sit_on_white() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    assert (decode_image(buf.getvalue(), 8, 1) == 255).all()


def test_scaling_round_trips_and_labels_sort_naturally() -> None:
    px = np.arange(256, dtype=np.uint8)
    assert to_unit(px).min() == -1.0 and to_unit(px).max() == 1.0
    assert np.array_equal(to_pixels(to_unit(px)), px)
    assert sort_labels(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_labels(["dog", "cat"]) == ["cat", "dog"]


def test_grid_and_png_files(tmp_path: Path) -> None:
    tiles = np.stack([np.full((1, 4, 4), v, np.uint8) for v in (0, 100, 200)])
    grid = image_grid(tiles, columns=2, pad=1)
    assert grid.shape == (1, 2 * 5 + 1, 2 * 5 + 1)
    assert (
        (grid[0, 1:5, 1:5] == 0).all()
        and (grid[0, 1:5, 6:10] == 100).all()
        and (grid[0, 6:10, 1:5] == 200).all()
    )
    assert (grid[0, 6:10, 6:10] == 255).all()  # the empty tile is white
    table = pa.table(
        {
            "image": pa.array([encode_png(t) for t in tiles], pa.binary()),
            "label": ["a", "b", "a"],
        }
    )
    paths = write_images(table, tmp_path / "out")
    assert [p.name for p in paths] == ["a_0.png", "b_1.png", "a_2.png", "grid.png"]
    assert np.asarray(Image.open(paths[1])).tolist() == [[100] * 4] * 4
    g = np.asarray(Image.open(paths[-1]))  # a row per label (a: 2 images, b: 1), tiles scaled to 64
    assert g.shape == (2 * 65 + 1, 2 * 65 + 1)


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 2.0) == pytest.approx(16.0, rel=0.01)  # |mu shift|^2 = 4 * 2^2
    x = rng.uniform(-1, 1, size=(3, 1, 16, 16)).astype(np.float32)
    assert pooled_features(x).shape == (3, 64)


def _records(n: int, paths_dir: Path | None = None) -> pa.Table:
    """n records: a dark square on light grey for label "1", light on dark for "0"; every 5th id
    in validation. With ``paths_dir`` the images are files and the column holds their paths."""
    cells, labels = [], []
    for i in range(n):
        img = np.full((10, 10), 30 if i % 2 == 0 else 220, np.uint8)
        img[3:7, 3:7] = 255 - img[0, 0]
        if paths_dir is not None:
            p = paths_dir / f"{i}.png"
            p.write_bytes(png(img))
            cells.append(str(p))
        else:
            cells.append(png(img))
        labels.append(str(i % 2))
    cells[3] = b"not an image" if paths_dir is None else cells[3]
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "image": pa.array(cells, pa.binary() if paths_dir is None else pa.string()),
            "label": labels,
        }
    )


def prepare_input(table: pa.Table) -> PrepareInput:
    def batches(columns=None):  # type: ignore[no-untyped-def]
        for start in range(0, table.num_rows, 16):
            t = table.slice(start, 16)
            yield t.select([c for c in columns if c in t.column_names]) if columns else t

    def split(batch: pa.Table) -> list[str]:
        return ["val" if int(i[1:]) % 5 == 0 else "train" for i in batch.column("id").to_pylist()]

    return PrepareInput(batches=batches, columns=table.column_names, split=split, resolve=str)


def test_prepare_stores_uint8_splits_labels_and_counts_what_it_skipped(tmp_path: Path) -> None:
    from genloom.models.image_gan import ImageGANFamily

    class Cfg:  # the two fields prepare reads of a TrainConfig
        model = ImageGANConfig(size=8)
        seed = 0

    out = ImageGANFamily().prepare(prepare_input(_records(40)), Cfg(), tmp_path)
    assert out.stats["skipped"] == {"undecodable:UnidentifiedImageError": 1}  # r3's bytes
    assert out.stats["rows"] == 31 and out.stats["val_rows"] == 8 and out.stats["channels"] == 1
    train = np.load(tmp_path / "train.npy")
    assert train.shape == (31, 1, 8, 8) and train.dtype == np.uint8
    layout = ImageLayout.load(tmp_path / "images.json")
    assert layout.labels == ["0", "1"] and sum(layout.counts) == 31
    labels = np.load(tmp_path / "train_labels.npy")
    dark = train[:, 0, 0, 0] < 128
    assert np.array_equal(labels == 0, dark)  # label 0 is the dark background


def test_prepare_reads_file_paths_and_finds_colour(tmp_path: Path) -> None:
    from genloom.models.image_data import ImageVAEConfig
    from genloom.models.image_vae import ImageVAEFamily

    class Cfg:
        model = ImageVAEConfig(size=8)
        seed = 0

    images = tmp_path / "files"
    images.mkdir()
    table = _records(20, images)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 2] = 255
    (images / "7.png").write_bytes(png(rgb))  # one colour image: the set becomes RGB
    out = ImageVAEFamily().prepare(prepare_input(table), Cfg(), tmp_path / "prep")
    assert out.stats["channels"] == 3 and "skipped" not in out.stats
    assert np.load(tmp_path / "prep" / "train.npy").shape[1:] == (3, 8, 8)
