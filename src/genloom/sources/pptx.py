"""PowerPoint PPTX files (python-pptx): text per slide with slide numbers, tables, notes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.text import clean_text, markdown_table


def _shape_texts(shapes: Any) -> Iterator[str]:
    """Text of shapes in reading order (top to bottom, then left to right); groups recursed."""
    ordered = sorted(
        shapes, key=lambda s: (s.top if s.top is not None else -1, s.left if s.left is not None else -1)
    )
    for shape in ordered:
        if getattr(shape, "shape_type", None) == 6 or hasattr(shape, "shapes"):  # MSO_SHAPE_TYPE.GROUP
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
            if rows:
                yield markdown_table(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text
            if text.strip():
                yield text


@SOURCES.register("pptx")
class PptxSource(FileSource):
    """PowerPoint ``.pptx`` files: one record per slide (``#page=N`` is the slide number), or chunks.

    The text of every shape in reading order (groups included), tables as Markdown, and the
    speaker notes (``notes: true``) after a ``Notes:`` line; the slide title goes to
    ``meta.section``. Quarantined: ``encrypted`` (an OLE2-wrapped PPTX), ``corrupt``, ``no_text``.
    """

    type: Literal["pptx"] = "pptx"
    #: add the speaker notes to each slide's text
    notes: bool = True

    formats: ClassVar[tuple[str, ...]] = ("pptx",)
    default_include: ClassVar[tuple[str, ...]] = ("*.pptx",)
    extensions: ClassVar[tuple[str, ...]] = ("pptx",)
    zip_members: ClassVar[tuple[tuple[str, ...], ...]] = (("[Content_Types].xml", "ppt/"),)
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("pptx",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        import pptx

        try:
            prs = pptx.Presentation(str(blob.path))
        except Exception as e:
            raise RecordError("corrupt", f"not a readable PPTX: {type(e).__name__}: {e}") from e
        meta: dict[str, Any] = {"slides": len(prs.slides)}
        props = prs.core_properties
        for name in ("title", "author"):
            if getattr(props, name, None):
                meta[name] = str(getattr(props, name))
        yield from self.emit_document(blob, self._blocks(prs), meta, per_page=True)

    def _blocks(self, prs: Any) -> Iterator[Block]:
        for number, slide in enumerate(prs.slides, 1):
            title_shape = slide.shapes.title
            title = (
                clean_text(title_shape.text) if title_shape is not None and title_shape.has_text_frame else ""
            )
            section = (title,) if title else ()
            for text in _shape_texts(slide.shapes):
                text = clean_text(text) if not text.startswith("| ") else text
                if text:
                    yield Block(text, section, page=number)
            if self.notes and slide.has_notes_slide:
                notes = clean_text(slide.notes_slide.notes_text_frame.text or "")
                if notes:
                    yield Block(f"Notes:\n{notes}", section, page=number)
