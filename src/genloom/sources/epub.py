"""EPUB e-books (EPUB 2 and 3): chapters in spine order, headings as structure, lxml only."""

from __future__ import annotations

import html.entities
import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from urllib.parse import unquote

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block, section_path
from genloom.sources._files.text import clean_text, markdown_table

CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
OPF = "{http://www.idpf.org/2007/opf}"
DC = "{http://purl.org/dc/elements/1.1/}"
XMLENC = "{http://www.w3.org/2001/04/xmlenc#}"
# font obfuscation (IDPF, Adobe) also lists resources in encryption.xml, but it is not DRM
FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}
CHAPTER_TYPES = {"application/xhtml+xml", "text/html", "application/xml", "text/xml"}

_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_CONTAINERS = {
    "body", "div", "section", "article", "main", "header", "footer", "aside", "nav", "blockquote",
    "figure", "figcaption", "center", "address", "details", "summary", "hgroup", "dl", "dt", "dd",
    "form", "fieldset", "tbody", "thead", "tfoot", "caption",
}  # fmt: skip
_BLOCK_HANDLERS = {"p", "ul", "ol", "table", "pre", "hr", "li"}
_SKIPPED = {"head", "script", "style", "template", "svg", "math", "noscript", "object", "iframe"}
_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = {b"amp", b"lt", b"gt", b"quot", b"apos"}


def _local(tag: Any) -> str:
    """Tag name without its namespace, lower-cased; empty for comments and processing instructions."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _html_entities(data: bytes) -> bytes:
    """Replace HTML named entities (``&nbsp;``), which XHTML files use without loading their DTD."""

    def sub(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group(0)
        code = html.entities.name2codepoint.get(name.decode("ascii"))
        return f"&#{code};".encode() if code is not None else m.group(0)

    return _ENTITY.sub(sub, data)


def _parse_xml(data: bytes, what: str) -> Any:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise RecordError("corrupt", f"{what}: {e}") from e


def _parse_chapter(data: bytes) -> Any:
    """An XHTML chapter as an lxml tree; the lenient HTML parser when it is not well-formed XML."""
    from lxml import etree
    from lxml import html as lxml_html

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.fromstring(_html_entities(data), parser)
    except etree.XMLSyntaxError:
        return lxml_html.fromstring(data)


def _inline(el: Any, skip_lists: bool = False) -> str:
    """Text of an element and its descendants; ``<br>`` as a line break, scripts and notes left out."""
    out = [el.text or ""]
    for child in el:
        name = _local(child.tag)
        if name == "br":
            out.append("\n")
        elif name and name not in _SKIPPED and not (skip_lists and name in ("ul", "ol")):
            out.append(_inline(child, skip_lists))
        out.append(child.tail or "")
    return "".join(out)


class _ChapterWalker:
    """Turns XHTML bodies into blocks; the heading stack runs across chapters."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []

    def section(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.stack)

    def blocks(self, root: Any) -> Iterator[Block]:
        body = next((el for el in root.iter() if _local(el.tag) == "body"), None)
        yield from self._container(body if body is not None else root)

    def _container(self, el: Any) -> Iterator[Block]:
        """Block children in order; loose text and inline children between them form paragraphs."""
        run: list[str] = [el.text or ""]
        for child in el:
            name = _local(child.tag)
            if name in _SKIPPED:
                pass
            elif name in _HEADINGS or name in _CONTAINERS or name in _BLOCK_HANDLERS:
                yield from self._flush(run)
                run = []
                yield from self._block(child, name)
            elif name == "br":
                run.append("\n")
            elif name:
                run.append(_inline(child))
            run.append(child.tail or "")
        yield from self._flush(run)

    def _flush(self, run: list[str]) -> Iterator[Block]:
        text = clean_text("".join(run))
        if text:
            yield Block(text, self.section())

    def _block(self, el: Any, name: str) -> Iterator[Block]:
        if name in _HEADINGS:
            text = clean_text(_inline(el).replace("\n", " "))
            if text:
                self.stack = section_path(self.stack, _HEADINGS[name], text)
                yield Block(text, self.section(), heading=True)
        elif name in ("ul", "ol"):
            yield from self._list(el, 0)
        elif name == "table":
            rows = [
                [
                    clean_text(_inline(cell).replace("\n", " "))
                    for cell in tr
                    if _local(cell.tag) in ("td", "th")
                ]
                for tr in el.iter()
                if _local(tr.tag) == "tr"
            ]
            rows = [r for r in rows if any(r)]
            if rows:
                yield Block(markdown_table(rows), self.section())
        elif name == "pre":
            text = _inline(el).strip("\n")
            if text.strip():
                yield Block(text, self.section())
        elif name == "p":
            yield from self._flush([_inline(el)])
        else:
            yield from self._container(el)

    def _list(self, el: Any, depth: int) -> Iterator[Block]:
        for li in el:
            if _local(li.tag) != "li":
                continue
            text = clean_text(_inline(li, skip_lists=True).replace("\n", " "))
            if text:
                yield Block("  " * depth + "- " + text, self.section())
            for nested in _sublists(li):
                yield from self._list(nested, depth + 1)


def _sublists(el: Any) -> Iterator[Any]:
    """The lists inside a list item (in a ``<p>`` or ``<div>`` too), not those nested in them."""
    for child in el:
        name = _local(child.tag)
        if name in ("ul", "ol"):
            yield child
        elif name and name not in _SKIPPED:
            yield from _sublists(child)


@SOURCES.register("epub")
class EpubSource(FileSource):
    """EPUB e-books (EPUB 2 and 3): one record per book, or chunks by heading.

    The package document (``META-INF/container.xml`` -> the OPF rootfile) gives the reading order:
    every XHTML item of the ``spine`` in turn (the EPUB 3 navigation document left out). Each
    chapter is parsed with lxml: ``h1``-``h6`` make the section path (running across chapters),
    paragraphs and loose text are blocks, list items become ``- item`` lines, tables become
    Markdown tables; scripts, styles, SVG and MathML are dropped. ``dc:title``, ``dc:creator``
    (several joined with ``, ``) and ``dc:language`` go to ``meta`` with the number of chapters.
    Quarantined: ``encrypted`` (DRM: ``META-INF/encryption.xml`` lists resources encrypted with
    anything but font obfuscation), ``corrupt`` (no container or OPF, a spine item missing from
    the archive), ``too_large`` (chapters over ``max_epub_mb`` uncompressed), ``no_text``.
    """

    type: Literal["epub"] = "epub"
    #: books whose chapters hold more than this (uncompressed) are quarantined as ``too_large``
    max_epub_mb: float = Field(256.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("epub",)
    default_include: ClassVar[tuple[str, ...]] = ("*.epub",)
    extensions: ClassVar[tuple[str, ...]] = ("epub",)
    zip_mimetypes: ClassVar[tuple[str, ...]] = ("application/epub+zip",)
    # an EPUB zipped without its mimetype member, when the name says EPUB too
    zip_members: ClassVar[tuple[tuple[str, ...], ...]] = (("META-INF/container.xml",),)
    weak_zip_members: ClassVar[bool] = True
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("lxml",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        try:
            z = zipfile.ZipFile(blob.path)
        except zipfile.BadZipFile as e:
            raise RecordError("corrupt", f"not a readable EPUB: {e}") from e
        with z:
            names = set(z.namelist())
            _check_drm(z, names)
            opf_path = _rootfile(z, names)
            opf = _parse_xml(_read(z, opf_path), opf_path)
            meta = _metadata(opf)
            chapters = _spine(opf, posixpath.dirname(opf_path))
            missing = [c for c in chapters if c not in names]
            if missing:
                raise RecordError("corrupt", f"spine items missing from the archive: {missing[:5]}")
            total = sum(z.getinfo(c).file_size for c in chapters)
            if total > self.max_epub_mb * 1e6:
                raise RecordError(
                    "too_large",
                    f"chapters hold {total} bytes uncompressed (max_epub_mb {self.max_epub_mb:g})",
                )
            meta["chapters"] = len(chapters)
            walker = _ChapterWalker()
            blocks = [b for c in chapters for b in walker.blocks(_parse_chapter(_read(z, c)))]
        yield from self.emit_document(blob, blocks, meta)


def _read(z: zipfile.ZipFile, name: str) -> bytes:
    """One member's bytes; a damaged or password-protected member becomes a RecordError."""
    try:
        return z.read(name)
    except RuntimeError as e:  # zipfile: "File ... is encrypted, password required"
        raise RecordError("encrypted", f"{name}: {e}") from e
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise RecordError("corrupt", f"{name}: {type(e).__name__}: {e}") from e


def _check_drm(z: zipfile.ZipFile, names: set[str]) -> None:
    """RecordError ``encrypted`` when encryption.xml lists a resource encrypted by more than font obfuscation."""
    if "META-INF/encryption.xml" not in names:
        return
    root = _parse_xml(_read(z, "META-INF/encryption.xml"), "META-INF/encryption.xml")
    locked = []
    for data in root.iter(f"{XMLENC}EncryptedData"):
        method = data.find(f"{XMLENC}EncryptionMethod")
        algorithm = method.get("Algorithm", "") if method is not None else ""
        if algorithm not in FONT_OBFUSCATION:
            ref = data.find(f"{XMLENC}CipherData/{XMLENC}CipherReference")
            locked.append((ref.get("URI", "?") if ref is not None else "?", algorithm))
    if locked:
        drm = "Adobe ADEPT" if "META-INF/rights.xml" in names else "DRM"
        raise RecordError(
            "encrypted",
            f"{drm}-encrypted EPUB: {len(locked)} resources encrypted ({locked[0][1] or 'unknown algorithm'}), "
            f"e.g. {locked[0][0]}",
        )


def _rootfile(z: zipfile.ZipFile, names: set[str]) -> str:
    """Path of the OPF package document named by ``META-INF/container.xml``."""
    if "META-INF/container.xml" not in names:
        raise RecordError("corrupt", "EPUB without META-INF/container.xml")
    container = _parse_xml(_read(z, "META-INF/container.xml"), "META-INF/container.xml")
    for rootfile in container.iter(f"{CONTAINER}rootfile"):
        path = rootfile.get("full-path", "")
        media = rootfile.get("media-type", "application/oebps-package+xml")
        if path and media == "application/oebps-package+xml":
            if path not in names:
                raise RecordError("corrupt", f"container.xml names {path!r}, which the archive lacks")
            return path
    raise RecordError("corrupt", "container.xml names no OPF rootfile")


def _metadata(opf: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    md = opf.find(f"{OPF}metadata")
    if md is None:
        return meta
    titles = [clean_text(el.text or "") for el in md.iter(f"{DC}title")]
    creators = [clean_text(el.text or "") for el in md.iter(f"{DC}creator")]
    language = md.find(f".//{DC}language")
    if any(titles):
        meta["title"] = next(t for t in titles if t)
    if any(creators):
        meta["author"] = ", ".join(c for c in creators if c)
    if language is not None and language.text and language.text.strip():
        meta["language"] = language.text.strip()
    return meta


def _spine(opf: Any, base: str) -> list[str]:
    """Archive paths of the spine's XHTML items in reading order (the navigation document left out)."""
    manifest: dict[str, tuple[str, str, str]] = {}
    for item in opf.iter(f"{OPF}item"):
        href = unquote(item.get("href", "").split("#", 1)[0])
        path = posixpath.normpath(posixpath.join(base, href)) if href else ""
        manifest[item.get("id", "")] = (path, item.get("media-type", ""), item.get("properties", ""))
    spine = opf.find(f"{OPF}spine")
    if spine is None:
        raise RecordError("corrupt", "OPF without a spine")
    out: list[str] = []
    for ref in spine.iter(f"{OPF}itemref"):
        path, media, props = manifest.get(ref.get("idref", ""), ("", "", ""))
        if not path or media not in CHAPTER_TYPES or "nav" in props.split() or path in out:
            continue
        out.append(path)
    return out
