"""Folders of images (PNG, JPEG, GIF, BMP, TIFF, WebP) as records, one per image, through Pillow."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.errors import ConfigError, MissingDependencyError, RecordError, StepError
from genloom.core.records import Rejected, record_id
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob

IMAGE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),
        ("image", pa.binary()),
        ("label", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


def image_record(
    source: str, key: str, data: bytes, label: str | None, width: int, height: int, meta: dict[str, Any]
) -> dict[str, Any]:
    """One image record: ``image`` (encoded bytes), ``label``, ``width``, ``height``; no text."""
    return {
        "id": record_id(source, key),
        "text": None,
        "source": source,
        "meta": meta,
        "image": data,
        "label": label,
        "width": width,
        "height": height,
    }


@SOURCES.register("image_folder")
class ImageFolderSource(FileSource):
    """Images in folders, one record per file: ``image`` holds PNG bytes (re-encoded after the
    optional ``max_side`` resize, so every record decodes the same way) or, with ``encode:
    original``, the file's own bytes; ``width`` and ``height`` are those of the stored image.

    The ``label`` is the name of the folder that holds the file (``digits/7/a.png`` -> ``7``;
    a file directly in a folder named in ``paths`` has none), or, with ``labels_csv``, the value
    the CSV gives its file (by its path relative to the CSV's folder, else by its file name);
    ``label_from: none`` leaves it empty. The id is ``image_folder:<path>``, the path as matched
    (stable wherever the project folder is). A file Pillow cannot read is quarantined as
    ``unreadable_image`` (``truncated_image``, ``too_large`` for a decompression bomb); an
    animated GIF or a multi-page TIFF gives its first frame (``meta.frames`` counts them). The
    ``files`` source hands PNG, JPEG, GIF and TIFF files (by their signatures) to this reader.
    """

    type: Literal["image_folder"] = "image_folder"
    label_from: Literal["folder", "csv", "none"] = Field(
        default="folder",
        description="folder: the name of each file's folder; csv: the labels_csv mapping; none: no label",
    )
    labels_csv: str | None = Field(
        default=None,
        description="a CSV mapping files to labels (label_from: csv); relative to the pipeline file",
    )
    file_field: str = Field(default="file", description="the labels_csv column holding the file path or name")
    label_field: str = Field(default="label", description="the labels_csv column holding the label")
    max_side: int | None = Field(
        default=None,
        ge=1,
        description="shrink images whose longer side is larger to this many pixels (aspect kept)",
    )
    encode: Literal["png", "original"] = Field(
        default="png", description="png: store PNG bytes (lossless); original: the file's own bytes"
    )

    formats: ClassVar[tuple[str, ...]] = ("image_folder",)
    # what the ``files`` source hands to this reader: PNG, JPEG, GIF and TIFF by their signatures
    # (no extensions: the image names stay among the ones ``files`` declines without a signature;
    # BMP's "BM" and WebP's RIFF are too short or shared with other formats to be signatures)
    magic: ClassVar[tuple[bytes, ...]] = (
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF87a",
        b"GIF89a",
        b"II*\x00",
        b"MM\x00*",
    )
    default_include: ClassVar[tuple[str, ...]] = (
        "*.png",
        "*.jpg",
        "*.jpeg",
        "*.gif",
        "*.bmp",
        "*.tif",
        "*.tiff",
        "*.webp",
        "*.PNG",
        "*.JPG",
        "*.JPEG",
    )

    _labels: dict[str, str] | None = PrivateAttr(default=None)

    def check(self, path: str) -> None:
        super().check(path)
        if self.label_from == "csv" and not self.labels_csv:
            raise ConfigError("label_from: csv needs labels_csv", path=f"{path}.labels_csv")
        if self.labels_csv and self.label_from != "csv":
            raise ConfigError("labels_csv is read with label_from: csv", path=f"{path}.label_from")
        if self.encode == "original" and self.max_side is not None:
            raise ConfigError(
                "max_side re-encodes the images: it cannot keep the original bytes",
                path=f"{path}.encode",
                hint="use encode: png with max_side, or drop max_side",
            )
        if self.labels_csv and not Path(self.resolve_path(self.labels_csv)).is_file():
            raise ConfigError(f"no file {self.labels_csv!r}", path=f"{path}.labels_csv")

    def setup(self) -> None:
        try:
            import PIL  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("Pillow (image_folder)", "pip install 'genloom[image]'") from e

    def files_read(self) -> list[str]:
        """The labels CSV: editing it re-reads the images."""
        return [self.labels_csv] if self.labels_csv else []

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(super().fingerprint().encode())
        if self.labels_csv:
            h.update(Path(self.resolve_path(self.labels_csv)).read_bytes())
        return h.hexdigest()

    # -- labels

    def csv_labels(self) -> dict[str, str]:
        """The labels CSV as {path relative to its folder (POSIX): label} and {file name: label}."""
        if self._labels is None:
            path = Path(self.resolve_path(self.labels_csv or ""))
            labels: dict[str, str] = {}
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                missing = [
                    c for c in (self.file_field, self.label_field) if c not in (reader.fieldnames or [])
                ]
                if missing:
                    raise StepError(
                        f"{self.labels_csv} has no column {', '.join(missing)} (columns: {reader.fieldnames})"
                    )
                for row in reader:
                    name, label = (row[self.file_field] or "").strip(), (row[self.label_field] or "").strip()
                    if name:
                        labels[PurePosixPath(name.replace("\\", "/")).as_posix()] = label
                        labels.setdefault("\x00" + PurePosixPath(name).name, label)
            self._labels = labels
        return self._labels

    def label_of(self, key: str) -> str | None:
        """The label of the file matched as ``key``."""
        if self.label_from == "none":
            return None
        if self.label_from == "csv":
            labels = self.csv_labels()
            file = Path(self.resolve_path(key)).resolve()
            root = Path(self.resolve_path(self.labels_csv or "")).resolve().parent
            try:
                rel = file.relative_to(root).as_posix()
            except ValueError:
                rel = None
            found = labels.get(rel) if rel else None
            return found if found is not None else labels.get("\x00" + file.name) or None
        parent = PurePosixPath(key).parent
        roots = {PurePosixPath(p.rstrip("/")) for p in self.paths}
        if parent in roots or str(parent) in ("", "."):
            return None  # a file directly in a folder the config names: no class folder
        return parent.name

    # -- reading

    def read_blob(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """One record per image file; a file that does not read as an image is quarantined."""
        try:
            if blob.size == 0:
                raise RecordError("empty_file", "0 bytes")
            yield self.read_image(blob)
        except RecordError as e:
            yield Rejected(record_id(self.type, blob.key), e.reason, blob.key, e.detail)
        except (MissingDependencyError, StepError):
            raise

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """The image of ``blob`` (the ``files`` source's entry point; it quarantines what raises)."""
        yield self.read_image(blob)

    def read_image(self, blob: Blob) -> dict[str, Any]:
        """One image file as a record; raises RecordError (a reason) when Pillow cannot read it."""
        from PIL import Image, UnidentifiedImageError

        data = blob.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                frames = int(getattr(img, "n_frames", 1))
                img.load()
                mode = img.mode
                if self.encode == "original":
                    out, (w, h) = data, img.size
                else:
                    if self.max_side is not None and max(img.size) > self.max_side:
                        img.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
                    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
                        img = img.convert("RGB")  # CMYK, YCbCr...: PNG stores RGB
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    out, (w, h) = buf.getvalue(), img.size
        except Image.DecompressionBombError as e:
            raise RecordError("too_large", str(e)[:500]) from e
        except UnidentifiedImageError as e:
            raise RecordError("unreadable_image", str(e)[:500]) from e
        except (OSError, SyntaxError, ValueError) as e:  # Pillow's damaged-file errors
            reason = "truncated_image" if "truncated" in str(e).lower() else "unreadable_image"
            raise RecordError(reason, f"{type(e).__name__}: {e}"[:500]) from e
        meta: dict[str, Any] = {"path": blob.key, "format": fmt, "mode": mode}
        if frames > 1:
            meta["frames"] = frames
        return image_record(self.type, blob.key, out, self.label_of(blob.key), w, h, meta)
