"""OpenDocument presentations (``.odp``): text per slide with slide numbers, tables, notes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.text import clean_text
from genloom.sources.odt import OFFICE, TABLE, TEXT, odf_blocks, odf_text, read_odf

DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
PRESENTATION = "{urn:oasis:names:tc:opendocument:xmlns:presentation:1.0}"
SVG = "{urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0}"

_LENGTH = re.compile(r"^\s*(-?[\d.]+)\s*([a-z]*)")
_CM = {"cm": 1.0, "mm": 0.1, "in": 2.54, "pt": 2.54 / 72, "pc": 2.54 / 6, "px": 2.54 / 96, "": 1.0}
# shape children that are never slide text
_NOT_TEXT = (f"{PRESENTATION}notes", f"{DRAW}page-thumbnail", f"{OFFICE}forms")


def _length(value: str | None) -> float:
    """An ODF length (``2.5cm``, ``1in``, ``12pt``) in centimetres; -1 when absent or unreadable."""
    m = _LENGTH.match(value or "")
    if m is None:
        return -1.0
    try:
        return float(m.group(1)) * _CM.get(m.group(2), 1.0)
    except ValueError:
        return -1.0


def _position(shape: Any) -> tuple[float, float]:
    """(y, x) of a shape in centimetres; a group (which has none) sits at its top-left member."""
    if shape.get(f"{SVG}y") is None and shape.tag == f"{DRAW}g":
        members = [_position(el) for el in shape if isinstance(el.tag, str)]
        return min(members, default=(-1.0, -1.0))
    return _length(shape.get(f"{SVG}y")), _length(shape.get(f"{SVG}x"))


def _reading_order(shapes: list[Any]) -> list[Any]:
    """Shapes top to bottom, then left to right (like the pptx reader)."""
    return sorted(shapes, key=_position)


def _shape_blocks(parent: Any) -> Iterator[Block]:
    """Blocks of every shape under ``parent`` in reading order; groups recursed, empty placeholders skipped."""
    shapes = [el for el in parent if isinstance(el.tag, str) and el.tag not in _NOT_TEXT]
    for shape in _reading_order(shapes):
        if shape.get(f"{PRESENTATION}placeholder") == "true":
            continue  # an empty layout placeholder ("Click to add Title")
        if shape.tag == f"{DRAW}g":
            yield from _shape_blocks(shape)
        elif shape.tag == f"{DRAW}frame":
            for child in shape:
                if child.tag == f"{DRAW}text-box":
                    yield from odf_blocks(child)
                elif child.tag == f"{TABLE}table":
                    yield from odf_blocks([child])
        else:  # custom shapes, rectangles, ellipses... hold their paragraphs directly
            yield from odf_blocks(shape)


def _title(page: Any) -> str:
    """Text of the slide's title frame (``presentation:class="title"``), or empty."""
    for frame in page.iter(f"{DRAW}frame"):
        if frame.get(f"{PRESENTATION}class") == "title":
            return clean_text(" ".join(odf_text(p) for p in frame.iter(f"{TEXT}p", f"{TEXT}h")))
    return ""


@SOURCES.register("odp")
class OdpSource(FileSource):
    """OpenDocument presentations (LibreOffice Impress): one record per slide (``#page=N``), or chunks.

    Read straight from ``content.xml``: each ``draw:page`` is a slide, numbered from 1 in document
    order. The text of every frame and shape in reading order (top to bottom, then left to right;
    groups included, empty layout placeholders skipped), list items as ``- item`` lines, tables as
    Markdown, and the speaker notes (``notes: true``) after a ``Notes:`` line; the slide title goes
    to ``meta.section``; title and author come from ``meta.xml``. Quarantined: ``corrupt``,
    ``encrypted`` (password-protected ODF), ``no_text``.
    """

    type: Literal["odp"] = "odp"
    #: add the speaker notes to each slide's text
    notes: bool = True

    formats: ClassVar[tuple[str, ...]] = ("odp",)
    default_include: ClassVar[tuple[str, ...]] = ("*.odp",)
    extensions: ClassVar[tuple[str, ...]] = ("odp",)
    zip_mimetypes: ClassVar[tuple[str, ...]] = ("application/vnd.oasis.opendocument.presentation",)
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("lxml",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        content, meta = read_odf(blob, "ODP")
        body = content.find(f"{OFFICE}body/{OFFICE}presentation")
        if body is None:
            raise RecordError("no_text", "no office:presentation body")
        pages = body.findall(f"{DRAW}page")
        meta["slides"] = len(pages)
        yield from self.emit_document(blob, self._blocks(pages), meta, per_page=True)

    def _blocks(self, pages: list[Any]) -> Iterator[Block]:
        for number, page in enumerate(pages, 1):
            title = _title(page)
            section = (title,) if title else ()
            for block in _shape_blocks(page):
                yield Block(block.text, section, page=number)
            notes_el = page.find(f"{PRESENTATION}notes")
            if self.notes and notes_el is not None:
                notes = "\n".join(b.text for b in _shape_blocks(notes_el))
                if notes.strip():
                    yield Block(f"Notes:\n{notes}", section, page=number)
