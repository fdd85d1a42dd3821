"""PDF files: text per page (pypdfium2), ruled tables as Markdown (pdfplumber), OCR for scans."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.text import clean_text, markdown_table
from genloom.sources._files.tools import which

OCR_HINT = "install Tesseract to OCR it (Debian: apt-get install tesseract-ocr tesseract-ocr-eng)"
_ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 3, 4, 5


def open_pdf(blob: Blob, passwords: list[str]) -> Any:
    """Open with pypdfium2, trying no password (pdfium also tries the empty one), then ``passwords``.

    Raises RecordError ``encrypted`` (no password configured), ``wrong_password``, ``truncated``
    (no ``%%EOF`` at the end) or ``corrupt``.
    """
    import pypdfium2 as pdfium

    tries: list[str | None] = [None, *passwords]
    err: Exception | None = None
    for pw in tries:
        try:
            return pdfium.PdfDocument(str(blob.path), password=pw)
        except pdfium.PdfiumError as e:
            err = e
            if getattr(e, "err_code", None) != _ERR_PASSWORD:
                break
    code = getattr(err, "err_code", None)
    if code == _ERR_PASSWORD:
        if passwords:
            raise RecordError(
                "wrong_password", f"none of the {len(passwords)} configured password(s) opens this PDF"
            )
        raise RecordError(
            "encrypted", "the PDF needs a password: set password: ${env:PDF_PASSWORD} in the source config"
        )
    if code == _ERR_SECURITY:
        raise RecordError("encrypted", "unsupported PDF security handler")
    with open(blob.path, "rb") as f:
        f.seek(max(0, blob.size - 2048))
        tail = f.read()
    if b"%%EOF" not in tail:
        raise RecordError("truncated", f"no %%EOF marker at the end of the file ({blob.size} bytes): {err}")
    raise RecordError("corrupt", f"not a readable PDF: {err}")


def xref_ok(path: Path, size: int) -> bool:
    """Whether ``startxref`` points at a cross-reference table or stream (else pdfium rebuilt it)."""
    with open(path, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
        m = re.search(rb"startxref\s+(\d+)", tail)
        if not m or int(m.group(1)) >= size:
            return False
        f.seek(int(m.group(1)))
        head = f.read(32)
    return head.lstrip().startswith(b"xref") or re.match(rb"\s*\d+\s+\d+\s+obj", head) is not None


_STREAM = re.compile(rb"stream\r?\n")


def corrupt_streams(path: Path, size: int, limit: int = 256 << 20) -> int:
    """How many Flate streams of an unencrypted PDF fail to inflate (PDFium keeps what it can).

    The raw bytes are scanned (memory-mapped, so a large file is not read into memory); files over
    ``limit`` bytes and encrypted files (their streams are ciphertext) are not checked.
    """
    import mmap
    import zlib

    if size == 0 or size > limit:
        return 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m.rfind(b"/Encrypt") != -1:
            return 0
        bad, pos = 0, 0
        while (match := _STREAM.search(m, pos)) is not None:
            start = match.end()
            end = m.find(b"endstream", start)
            if end == -1:
                break
            pos = end + 9
            head = m[max(0, match.start() - 512) : match.start()]
            head = head[head.rfind(b"obj") + 1 :]  # this object's dictionary only
            if b"/FlateDecode" not in head or b"/DecodeParms" in head:
                continue
            try:
                zlib.decompressobj().decompress(m[start:end])
            except zlib.error:
                bad += 1
    return bad


def outline_sections(doc: Any) -> dict[int, tuple[str, ...]]:
    """Page index -> the outline (bookmark) path in force on that page."""
    entries: list[tuple[int, int, str]] = []
    try:
        for i, item in enumerate(doc.get_toc(max_depth=8)):
            dest = item.get_dest()
            page = dest.get_index() if dest is not None else None
            if page is not None:
                entries.append((page, i, f"{item.level}\0{item.get_title()}"))
    except Exception:  # a broken outline must not lose the text
        return {}
    out: dict[int, tuple[str, ...]] = {}
    stack: list[tuple[int, str]] = []
    pages = len(doc)
    it = iter(sorted(entries))
    pending = next(it, None)
    for p in range(pages):
        while pending is not None and pending[0] <= p:
            level_s, title = pending[2].split("\0", 1)
            level = int(level_s)
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, title.strip())]
            pending = next(it, None)
        if stack:
            out[p] = tuple(t for _, t in stack)
    return out


def ocr_image(image: Any, lang: str) -> str:
    """Text of a PIL image through the ``tesseract`` command line."""
    fd, name = tempfile.mkstemp(prefix="genloom-ocr-", suffix=".png")
    os.close(fd)
    try:
        image.save(name)
        out = subprocess.run(
            ["tesseract", name, "stdout", "-l", lang, "--psm", "3"],
            capture_output=True,
            timeout=300,
            check=False,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        if out.returncode != 0:
            raise RecordError("ocr_failed", out.stderr.decode("utf-8", "replace")[-500:])
        return out.stdout.decode("utf-8", "replace")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _plumber_page_text(pl_page: Any) -> str | None:
    """Page text with ruled tables rendered as Markdown, in reading order; None when no table."""
    tables = []
    for t in pl_page.find_tables():
        rows = t.extract()
        if len(rows) >= 2 and max(len(r) for r in rows) >= 2:
            tables.append((t.bbox, rows))
    if not tables:
        return None
    boxes = [b for b, _ in tables]

    def outside(obj: dict[str, Any]) -> bool:
        if obj.get("object_type") != "char":
            return True
        cx, cy = (obj["x0"] + obj["x1"]) / 2, (obj["top"] + obj["bottom"]) / 2
        return not any(x0 <= cx <= x1 and top <= cy <= bottom for x0, top, x1, bottom in boxes)

    rest = pl_page.filter(outside)
    parts: list[str] = []
    prev = pl_page.bbox[1]
    for (_, top, _, bottom), rows in sorted(tables, key=lambda t: t[0][1]):
        if top > prev:
            parts.append(rest.within_bbox((pl_page.bbox[0], prev, pl_page.bbox[2], top)).extract_text() or "")
        parts.append(markdown_table(rows))
        prev = max(prev, bottom)
    if prev < pl_page.bbox[3]:
        parts.append(
            rest.within_bbox((pl_page.bbox[0], prev, pl_page.bbox[2], pl_page.bbox[3])).extract_text() or ""
        )
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


@SOURCES.register("pdf")
class PdfSource(FileSource):
    """PDF files: one record per page with its page number (or chunks across pages).

    Text comes from pypdfium2 (PDFium). Damaged files (a broken cross-reference table, a content
    stream that does not inflate) are quarantined as ``broken_xref`` / ``corrupt_stream`` unless
    ``damaged: recover`` keeps the text PDFium salvages, marked ``meta.repaired``. Pages with ruled tables (many vector paths) are re-read with
    pdfplumber, and their tables rendered as Markdown tables in reading order. The outline
    (bookmarks) gives each page its section path. Encrypted files open with ``password``
    (``${env:PDF_PASSWORD}``); pages without a text layer are OCR'd with Tesseract when it is
    installed. Quarantined: ``encrypted`` (no password given), ``wrong_password``, ``truncated``,
    ``corrupt``, ``broken_xref``, ``corrupt_stream``, ``no_text_layer`` (a scan and no Tesseract: the detail says what to install),
    ``empty_file``.
    """

    type: Literal["pdf"] = "pdf"
    #: ruled tables as Markdown: on pages with many vector paths (auto), on every page, or never
    tables: Literal["auto", "always", "never"] = "auto"
    #: OCR pages without text: when Tesseract is installed (auto), or never
    ocr: Literal["auto", "never"] = "auto"
    #: Tesseract language(s), e.g. ``eng+deu``
    ocr_lang: str = "eng"
    #: resolution of pages rendered for OCR
    ocr_dpi: int = Field(200, ge=72, le=600)
    #: read at most this many pages per file
    max_pages: int | None = Field(None, gt=0)
    #: damaged files (broken xref, corrupt streams): quarantine them, or keep what PDFium recovers
    damaged: Literal["quarantine", "recover"] = "quarantine"

    formats: ClassVar[tuple[str, ...]] = ("pdf",)
    default_include: ClassVar[tuple[str, ...]] = ("*.pdf",)
    extensions: ClassVar[tuple[str, ...]] = ("pdf",)
    magic: ClassVar[tuple[bytes, ...]] = (b"%PDF-",)
    magic_within: ClassVar[int] = 1024  # readers accept junk before the header
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("pypdfium2",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        doc = open_pdf(blob, self.secrets())
        try:
            meta = self._doc_meta(doc, blob)
            yield from self.emit_document(blob, self._blocks(doc, blob, meta), meta, per_page=True)
        finally:
            doc.close()

    def _doc_meta(self, doc: Any, blob: Blob) -> dict[str, Any]:
        meta: dict[str, Any] = {"pages": len(doc)}
        with contextlib.suppress(Exception):
            info = doc.get_metadata_dict(skip_empty=True)
            for k in ("Title", "Author", "Subject", "CreationDate"):
                value = clean_text(str(info.get(k) or ""))
                if value:
                    meta[k.lower()] = value
        damage = []
        if not xref_ok(blob.path, blob.size):
            damage.append(("xref", "broken_xref", "startxref does not point at a cross-reference table"))
        if n := corrupt_streams(blob.path, blob.size):
            damage.append(("stream", "corrupt_stream", f"{n} content stream(s) fail to inflate (zlib)"))
        if damage and self.damaged == "quarantine":
            kind, reason, detail = damage[0]
            raise RecordError(reason, f"{detail}; set damaged: recover to keep the text PDFium salvages")
        if damage:
            meta["repaired"] = ",".join(kind for kind, _, _ in damage)
        return meta

    def _blocks(self, doc: Any, blob: Blob, meta: dict[str, Any]) -> Iterator[Block]:
        import pypdfium2.raw as pdfium_c

        sections = outline_sections(doc)
        n_pages = len(doc) if self.max_pages is None else min(len(doc), self.max_pages)
        can_ocr = self.ocr == "auto" and which("tesseract") is not None
        plumber = None
        empty_pages: list[int] = []
        produced = 0
        try:
            for i in range(n_pages):
                page = doc[i]
                try:
                    textpage = page.get_textpage()
                    text = clean_text(textpage.get_text_range())
                    textpage.close()
                    if self.tables != "never" and text:
                        paths = (
                            sum(
                                1 for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_PATH,), max_depth=1)
                            )
                            if self.tables == "auto"
                            else 1 << 30
                        )
                        if paths >= 30:
                            if plumber is None:
                                plumber = self._plumber(blob)
                            if plumber is not None:
                                with contextlib.suppress(Exception):
                                    tabled = _plumber_page_text(plumber.pages[i])
                                    if tabled:
                                        text = clean_text(tabled)
                    extra = None
                    if not text and can_ocr:
                        image = page.render(scale=self.ocr_dpi / 72).to_pil()
                        text = clean_text(ocr_image(image, self.ocr_lang))
                        extra = {"ocr": True}
                    if not text:
                        empty_pages.append(i + 1)
                        continue
                finally:
                    page.close()
                produced += 1
                yield Block(text, sections.get(i, ()), page=i + 1, meta=extra)
        finally:
            if plumber is not None:
                plumber.close()
        if produced == 0:
            if can_ocr:
                raise RecordError("no_text", f"{n_pages} page(s) without text, also after OCR")
            raise RecordError(
                "no_text_layer", f"{n_pages} page(s) without a text layer (a scan?); {OCR_HINT}"
            )

    def _plumber(self, blob: Blob) -> Any:
        try:
            import pdfplumber
        except ImportError:
            return None
        for password in ["", *self.secrets()]:
            with contextlib.suppress(Exception):
                return pdfplumber.open(str(blob.path), password=password)
        return None
