"""OpenDocument text (``.odt``): headings, lists, tables as Markdown."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block, section_path
from genloom.sources._files.text import clean_text, markdown_table

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
DC = "{http://purl.org/dc/elements/1.1/}"
META = "{urn:oasis:names:tc:opendocument:xmlns:meta:1.0}"


def odf_text(el: Any) -> str:
    """Text of an ODF element: spans, spaces (``text:s``), tabs and line breaks; notes left out."""
    out: list[str] = [el.text or ""]
    for child in el:
        tag = child.tag
        if tag == f"{TEXT}s":
            out.append(" " * int(child.get(f"{TEXT}c", "1")))
        elif tag == f"{TEXT}tab":
            out.append("\t")
        elif tag == f"{TEXT}line-break":
            out.append("\n")
        elif tag not in (f"{TEXT}note", f"{OFFICE}annotation"):
            out.append(odf_text(child))
        out.append(child.tail or "")
    return "".join(out)


def read_odf(blob: Blob, kind: str) -> tuple[Any, dict[str, Any]]:
    """(``content.xml`` root, title/author/created from ``meta.xml``) of an OpenDocument file.

    RecordError ``encrypted`` for a password-protected file, ``corrupt`` when the package or its
    XML cannot be read. ``kind`` names the format in messages (``ODT``, ``ODP``).
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        with zipfile.ZipFile(blob.path) as z:
            names = z.namelist()
            manifest = z.read("META-INF/manifest.xml") if "META-INF/manifest.xml" in names else b""
            if b"encryption-data" in manifest:
                raise RecordError("encrypted", "password-protected OpenDocument file")
            content = etree.fromstring(z.read("content.xml"), parser)
            meta_xml = etree.fromstring(z.read("meta.xml"), parser) if "meta.xml" in names else None
    except (zipfile.BadZipFile, KeyError, etree.XMLSyntaxError) as e:
        raise RecordError("corrupt", f"not a readable {kind}: {e}") from e
    meta: dict[str, Any] = {}
    if meta_xml is not None:
        for name, tag in (
            ("title", f"{DC}title"),
            ("author", f"{DC}creator"),
            ("created", f"{META}creation-date"),
        ):
            el = meta_xml.find(f".//{tag}")
            if el is not None and el.text:
                meta[name] = el.text.strip()
    return content, meta


def odf_blocks(body: Any) -> Iterator[Block]:
    """Blocks of an ODF text container: ``text:h`` headings make the section path, list items
    become ``- item`` lines, tables become Markdown tables."""
    stack: list[tuple[int, str]] = []

    def walk(parent: Any, depth: int) -> Iterator[Block]:
        nonlocal stack
        for el in parent:
            tag = el.tag
            if tag == f"{TEXT}h":
                text = clean_text(odf_text(el))
                if text:
                    stack = section_path(stack, int(el.get(f"{TEXT}outline-level", "1")), text)
                    yield Block(text, tuple(t for _, t in stack), heading=True)
            elif tag == f"{TEXT}p":
                text = clean_text(odf_text(el))
                if text:
                    prefix = "  " * (depth - 1) + "- " if depth else ""
                    yield Block(prefix + text, tuple(t for _, t in stack))
            elif tag == f"{TEXT}list":
                yield from walk(el, depth + 1)
            elif tag in (f"{TEXT}list-item", f"{TEXT}section", f"{TEXT}list-header"):
                yield from walk(el, depth)
            elif tag == f"{TABLE}table":
                rows = []
                for tr in el.iter(f"{TABLE}table-row"):
                    row = []
                    for tc in tr:
                        if tc.tag not in (f"{TABLE}table-cell", f"{TABLE}covered-table-cell"):
                            continue
                        value = " ".join(clean_text(odf_text(p)) for p in tc.iter(f"{TEXT}p"))
                        repeat = min(int(tc.get(f"{TABLE}number-columns-repeated", "1")), 100)
                        row.extend([value] * repeat)
                    while row and not row[-1]:
                        row.pop()
                    if row:
                        rows.append(row)
                if rows:
                    yield Block(markdown_table(rows), tuple(t for _, t in stack))

    yield from walk(body, 0)


@SOURCES.register("odt")
class OdtSource(FileSource):
    """OpenDocument text files (LibreOffice Writer), one record per document (or chunks by heading).

    Read straight from ``content.xml``: ``text:h`` headings make the section path, list items
    become ``- item`` lines, tables become Markdown tables; title and author come from
    ``meta.xml``. Quarantined: ``corrupt``, ``encrypted`` (password-protected ODF), ``no_text``.
    """

    type: Literal["odt"] = "odt"

    formats: ClassVar[tuple[str, ...]] = ("odt",)
    default_include: ClassVar[tuple[str, ...]] = ("*.odt",)
    extensions: ClassVar[tuple[str, ...]] = ("odt",)
    zip_mimetypes: ClassVar[tuple[str, ...]] = ("application/vnd.oasis.opendocument.text",)
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("lxml",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        content, meta = read_odf(blob, "ODT")
        body = content.find(f"{OFFICE}body/{OFFICE}text")
        if body is None:
            raise RecordError("no_text", "no office:text body")
        yield from self.emit_document(blob, odf_blocks(body), meta)
