"""HTML pages: the main text without boilerplate (trafilatura), title and links in meta."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block, section_path
from genloom.sources._files.encoding import decode_as, sniff_encoding
from genloom.sources._files.text import clean_text

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+)$")


def html_charset(head: bytes) -> str | None:
    """The charset declared by a BOM or a ``<meta charset>`` / ``http-equiv`` tag, if it is known."""
    import codecs

    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    m = _META_CHARSET.search(head[:8192])
    if m:
        name = m.group(1).decode("ascii", "ignore").lower()
        try:
            codecs.lookup(name)
        except LookupError:
            return None
        # browsers read a declared latin-1 as windows-1252 (WHATWG encoding standard)
        return "cp1252" if name in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii") else name
    return None


def html_to_text(html: str, main_content: bool = True, url: str | None = None) -> tuple[str, dict[str, Any]]:
    """Main text (Markdown headings kept) and meta (title, description, lang, links) of an HTML page."""
    import lxml.html
    import trafilatura

    meta: dict[str, Any] = {}
    html = _XML_DECL.sub("", html, count=1)  # lxml refuses str input that declares an encoding
    try:
        tree = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError) as e:  # type: ignore[attr-defined]
        raise RecordError("corrupt", f"HTML parse error: {e}") from e
    title = tree.findtext(".//title")
    if title and title.strip():
        meta["title"] = " ".join(title.split())
    desc = tree.xpath("//meta[@name='description']/@content")
    if desc:
        meta["description"] = " ".join(str(desc[0]).split())
    lang = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
    if lang:
        meta["lang"] = lang
    links = []
    for a in tree.iter("a"):
        href = a.get("href")
        if href and not href.startswith(("#", "javascript:", "mailto:")):
            links.append({"href": href, "text": " ".join(a.text_content().split())[:200]})
        if len(links) >= 500:
            break
    if links:
        meta["links"] = links
    text = None
    if main_content:
        text = trafilatura.extract(
            html,
            url=url,
            output_format="markdown",
            include_tables=True,
            include_comments=False,
            favor_recall=True,
        )
    if not text or len(text) < 0.05 * len(tree.text_content() or ""):
        text = trafilatura.html2txt(html) or tree.text_content()
    return text or "", meta


@SOURCES.register("html")
class HtmlSource(FileSource):
    """HTML pages: the main text without navigation, ads and footers (trafilatura), one record per page.

    The charset comes from a BOM, then ``<meta charset>``/``http-equiv``, then sniffing (so a
    cp1252 page without a declaration reads right). Headings become the section path of chunks;
    tables are kept as text. ``meta`` holds the title, description, language and links (href and
    anchor text). With ``main_content: false`` the whole page text is kept. Short pages where the
    extractor finds no main block fall back to the plain page text. Bytes invalid in the charset
    become U+FFFD, and the page's records count them in ``meta.invalid_bytes``.
    """

    type: Literal["html"] = "html"
    #: keep only the main content (trafilatura); false keeps every text node of the page
    main_content: bool = True
    #: pages larger than this are quarantined as ``too_large``
    max_html_mb: float = Field(64.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("html",)
    default_include: ClassVar[tuple[str, ...]] = ("*.html", "*.htm", "*.xhtml")
    extensions: ClassVar[tuple[str, ...]] = ("html", "htm", "xhtml")
    requires: ClassVar[tuple[str, ...]] = ("trafilatura", "lxml")
    extra: ClassVar[str] = "docs"

    @classmethod
    def sniff(cls, head: bytes, ext: str) -> bool:
        """A page whatever its name: a doctype, ``<html>`` or XML declaration, and an ``<html`` tag."""
        start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        return start.startswith((b"<!doctype html", b"<html", b"<?xml version")) and b"<html" in head.lower()

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        data = blob.read_bytes(int(self.max_html_mb * 1e6))
        encoding = html_charset(data) or sniff_encoding(data[: 1 << 20])
        decoded = decode_as(data, encoding)
        text, meta = html_to_text(decoded.text, self.main_content)
        meta["encoding"] = encoding
        yield from self.emit_document(blob, markdown_blocks(text), meta, damaged=decoded.invalid > 0)


def markdown_blocks(text: str) -> Iterator[Block]:
    """Paragraphs of Markdown-ish text with the heading path they sit under."""
    stack: list[tuple[int, str]] = []
    for para in re.split(r"\n\s*\n", text):
        para = clean_text(para)
        if not para:
            continue
        m = _MD_HEADING.match(para)
        if m and "\n" not in para:
            stack = section_path(stack, len(m.group(1)), m.group(2).strip())
            yield Block(para, tuple(t for _, t in stack), heading=True)
        else:
            yield Block(para, tuple(t for _, t in stack))
