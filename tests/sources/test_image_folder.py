"""image_folder: one record per image file (PNG bytes, label from the folder or a CSV, size),
broken files quarantined by reason; images written here by Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from genloom.core.errors import ConfigError
from genloom.sources.image_folder import ImageFolderSource

from .sources_fixtures import read_all

Image = pytest.importorskip("PIL.Image")


def _png(
    path: Path, size: tuple[int, int] = (12, 10), color: int | tuple[int, ...] = 128, mode: str = "L"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _source(root: Path, **kw: object) -> ImageFolderSource:
    src = ImageFolderSource(paths=["imgs"], **kw)
    src.bind(root)
    return src


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """imgs/cat/a.png (grey), imgs/cat/b.jpg (RGB JPEG), imgs/dog/c.png (RGBA), imgs/dog/anim.gif
    (2 frames), imgs/top.png (no class folder), and three broken files."""
    _png(tmp_path / "imgs/cat/a.png")
    _png(tmp_path / "imgs/cat/b.jpg", (40, 20), (200, 10, 10), "RGB")
    _png(tmp_path / "imgs/dog/c.png", (16, 16), (0, 0, 255, 128), "RGBA")
    frames = [Image.new("L", (8, 8), v) for v in (0, 255)]
    frames[0].save(tmp_path / "imgs/dog/anim.gif", save_all=True, append_images=frames[1:])
    _png(tmp_path / "imgs/top.png")
    (tmp_path / "imgs/dog/fake.png").write_bytes(b"this is not an image at all")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    (tmp_path / "imgs/cat/cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (tmp_path / "imgs/cat/empty.png").write_bytes(b"")
    return tmp_path


def test_one_record_per_image_with_the_folder_label(folder: Path) -> None:
    rows, rejected = read_all(_source(folder))
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {
        "image_folder:imgs/cat/a.png",
        "image_folder:imgs/cat/b.jpg",
        "image_folder:imgs/dog/c.png",
        "image_folder:imgs/dog/anim.gif",
        "image_folder:imgs/top.png",
    }
    assert by_id["image_folder:imgs/cat/a.png"]["label"] == "cat"
    assert by_id["image_folder:imgs/dog/c.png"]["label"] == "dog"
    assert by_id["image_folder:imgs/top.png"]["label"] is None  # no class folder
    b = by_id["image_folder:imgs/cat/b.jpg"]
    assert (b["width"], b["height"]) == (40, 20)
    img = Image.open(io.BytesIO(b["image"]))
    assert img.format == "PNG" and img.size == (40, 20)  # re-encoded losslessly
    assert b["meta"]["format"] == "JPEG" and b["source"] == "image_folder" and b["text"] is None
    assert by_id["image_folder:imgs/dog/anim.gif"]["meta"]["frames"] == 2
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {
        "image_folder:imgs/dog/fake.png": "unreadable_image",
        "image_folder:imgs/cat/cut.jpg": "truncated_image",
        "image_folder:imgs/cat/empty.png": "empty_file",
    }
    again, _ = read_all(_source(folder))  # ids and bytes are stable
    assert [(r["id"], r["image"]) for r in again] == [(r["id"], r["image"]) for r in rows]


def test_max_side_shrinks_and_original_keeps_the_bytes(folder: Path) -> None:
    rows, _ = read_all(_source(folder, max_side=10))
    b = next(r for r in rows if r["id"].endswith("b.jpg"))
    assert (b["width"], b["height"]) == (10, 5)
    assert Image.open(io.BytesIO(b["image"])).size == (10, 5)
    rows, _ = read_all(_source(folder, encode="original"))
    b = next(r for r in rows if r["id"].endswith("b.jpg"))
    assert b["image"] == (folder / "imgs/cat/b.jpg").read_bytes()
    with pytest.raises(ConfigError, match="max_side"):
        _source(folder, encode="original", max_side=4).check("sources.0")


def test_labels_from_a_csv_by_path_or_file_name(folder: Path) -> None:
    (folder / "labels.csv").write_text("file,label\nimgs/cat/a.png,tabby\nc.png,husky\n")
    src = _source(folder, label_from="csv", labels_csv="labels.csv")
    src.check("sources.0")
    rows, _ = read_all(src)
    labels = {r["id"].rsplit("/", 1)[1]: r["label"] for r in rows}
    assert labels["a.png"] == "tabby" and labels["c.png"] == "husky" and labels["b.jpg"] is None
    with pytest.raises(ConfigError, match="labels_csv"):
        _source(folder, label_from="csv").check("sources.0")


def test_no_label(folder: Path) -> None:
    rows, _ = read_all(_source(folder, label_from="none"))
    assert {r["label"] for r in rows} == {None}


def test_pixels_survive_the_round_trip(folder: Path) -> None:
    rows, _ = read_all(_source(folder))
    a = next(r for r in rows if r["id"].endswith("a.png"))
    assert np.asarray(Image.open(io.BytesIO(a["image"]))).tolist() == [[128] * 12] * 10


def test_the_files_source_reads_images_through_image_folder(folder: Path) -> None:
    from genloom.sources.files import FilesSource

    src = FilesSource(paths=["imgs"])
    src.bind(folder)
    rows, rejected = read_all(src)
    a = next(r for r in rows if r["id"].endswith("a.png"))
    assert a["label"] == "cat" and a["width"] == 12
    assert {r["reason"] for r in rejected} >= {"truncated_image", "empty_file"}
