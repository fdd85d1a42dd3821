"""Word DOCX files (python-docx): headings as structure, lists, tables as Markdown."""

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
from genloom.sources._files.chunking import Block, section_path
from genloom.sources._files.text import clean_text, markdown_table

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_NAME = re.compile(r"^(?:heading|überschrift|titre|titolo|encabezado|kop)\s*(\d)$", re.I)


def _style_levels(document: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(style id -> heading level: Title 0, Heading N -> N; style id -> list level for list styles)."""
    levels: dict[str, int] = {}
    lists: dict[str, int] = {}
    try:
        styles = document.styles.element
    except Exception:
        return levels, lists
    based: dict[str, str] = {}
    for st in styles.iter(f"{W}style"):
        sid = st.get(f"{W}styleId")
        numpr = st.find(f"{W}pPr/{W}numPr")
        if numpr is not None:
            ilvl = numpr.find(f"{W}ilvl")
            name_el = st.find(f"{W}name")
            suffix = re.search(r"\s(\d)$", name_el.get(f"{W}val", "") if name_el is not None else "")
            # "List Bullet 2" carries its level in the numbering part; its name says it too
            lists[sid] = (
                int(ilvl.get(f"{W}val", "0"))
                if ilvl is not None
                else (int(suffix.group(1)) - 1 if suffix else 0)
            )
        base = st.find(f"{W}basedOn")
        if base is not None:
            based[sid] = base.get(f"{W}val", "")
    for sid in list(based):  # list numbering inherited through basedOn
        seen, cur = set(), sid
        while cur in based and cur not in lists and cur not in seen:
            seen.add(cur)
            cur = based[cur]
        if cur in lists and sid not in lists:
            lists[sid] = lists[cur]
    for st in styles.iter(f"{W}style"):
        sid = st.get(f"{W}styleId")
        name_el = st.find(f"{W}name")
        name = name_el.get(f"{W}val", "") if name_el is not None else ""
        m = _HEADING_NAME.match(name.strip())
        outline = st.find(f"{W}pPr/{W}outlineLvl")
        if name.lower() == "title":
            levels[sid] = 0
        elif m:
            levels[sid] = int(m.group(1))
        elif (
            outline is not None and outline.get(f"{W}val", "9").isdigit() and int(outline.get(f"{W}val")) < 9
        ):
            levels[sid] = int(outline.get(f"{W}val")) + 1
    return levels, lists


def paragraph_text(p: Any) -> str:
    """Visible text of a ``w:p`` (runs, tabs, breaks; deleted text left out)."""
    out: list[str] = []
    for el in p.iter(f"{W}t", f"{W}tab", f"{W}br", f"{W}cr", f"{W}noBreakHyphen"):
        tag = el.tag
        if tag == f"{W}t":
            out.append(el.text or "")
        elif tag == f"{W}tab":
            out.append("\t")
        elif tag == f"{W}noBreakHyphen":
            out.append("-")
        else:
            out.append("\n")
    return "".join(out)


def table_rows(tbl: Any) -> list[list[str]]:
    """Rows of a ``w:tbl``; merged cells repeat their value so every row reads on its own."""
    rows: list[list[str]] = []
    above: dict[int, str] = {}
    for tr in tbl.iterchildren(f"{W}tr"):
        row: list[str] = []
        for tc in tr.iterchildren(f"{W}tc"):
            span_el = tc.find(f"{W}tcPr/{W}gridSpan")
            span = int(span_el.get(f"{W}val", "1")) if span_el is not None else 1
            vmerge = tc.find(f"{W}tcPr/{W}vMerge")
            col = len(row)
            if vmerge is not None and vmerge.get(f"{W}val") != "restart":
                text = above.get(col, "")
            else:
                parts = []
                for child in tc.iterchildren():
                    if child.tag == f"{W}p":
                        parts.append(paragraph_text(child))
                    elif child.tag == f"{W}tbl":
                        parts.extend(" ".join(r) for r in table_rows(child))
                text = " ".join(t.strip() for t in parts if t.strip())
            for k in range(span):
                row.append(text)
                above[col + k] = text
        rows.append(row)
    return rows


def _body_items(parent: Any) -> Iterator[Any]:
    """Paragraphs and tables of the body in order, unwrapping content controls (``w:sdt``)."""
    for el in parent.iterchildren():
        if el.tag in (f"{W}p", f"{W}tbl"):
            yield el
        elif el.tag == f"{W}sdt":
            content = el.find(f"{W}sdtContent")
            if content is not None:
                yield from _body_items(content)


@SOURCES.register("docx")
class DocxSource(FileSource):
    """Word DOCX files: one record per document (or chunks by heading).

    Headings (``Title``, ``Heading N`` and outline-level styles) make the section path; list
    paragraphs become ``- item`` lines indented by level; tables become Markdown tables (merged
    cells repeat their value, nested tables are flattened into their cell). Core properties
    (title, author, subject, created, modified) go to ``meta``. Detected by content, so a DOCX
    named ``.doc`` is read here. Quarantined: ``encrypted`` (a password-protected DOCX is an OLE2
    container), ``corrupt``, ``no_text``.
    """

    type: Literal["docx"] = "docx"

    formats: ClassVar[tuple[str, ...]] = ("docx",)
    default_include: ClassVar[tuple[str, ...]] = ("*.docx", "*.docm", "*.doc")
    extensions: ClassVar[tuple[str, ...]] = ("docx", "docm")
    zip_members: ClassVar[tuple[tuple[str, ...], ...]] = (("[Content_Types].xml", "word/"),)
    signature_required: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("docx",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        import docx

        try:
            document = docx.Document(str(blob.path))
        except Exception as e:  # python-docx raises KeyError, ValueError, BadZipFile... on damaged packages
            raise RecordError("corrupt", f"not a readable DOCX: {type(e).__name__}: {e}") from e
        meta: dict[str, Any] = {}
        props = document.core_properties
        for name in ("title", "author", "subject", "keywords"):
            value = getattr(props, name, None)
            if value:
                meta[name] = str(value)
        for name in ("created", "modified"):
            value = getattr(props, name, None)
            if value is not None:
                meta[name] = value.isoformat()
        yield from self.emit_document(blob, self._blocks(document), meta)

    def _blocks(self, document: Any) -> Iterator[Block]:
        levels, list_styles = _style_levels(document)
        stack: list[tuple[int, str]] = []
        for el in _body_items(document.element.body):
            if el.tag == f"{W}tbl":
                rows = table_rows(el)
                if any(any(c for c in r) for r in rows):
                    yield Block(markdown_table(rows), tuple(t for _, t in stack))
                continue
            text = clean_text(paragraph_text(el))
            if not text:
                continue
            ppr = el.find(f"{W}pPr")
            style = ppr.find(f"{W}pStyle") if ppr is not None else None
            style_id = style.get(f"{W}val") if style is not None else None
            level = levels.get(style_id) if style_id is not None else None
            outline = ppr.find(f"{W}outlineLvl") if ppr is not None else None
            if level is None and outline is not None and outline.get(f"{W}val", "9").isdigit():
                lv = int(outline.get(f"{W}val", "9"))
                level = lv + 1 if lv < 9 else None
            if level is not None:
                stack = section_path(stack, level, text)
                yield Block(text, tuple(t for _, t in stack), heading=True)
                continue
            numpr = ppr.find(f"{W}numPr") if ppr is not None else None
            if numpr is not None or style_id in list_styles:
                ilvl = numpr.find(f"{W}ilvl") if numpr is not None else None
                depth = (
                    int(ilvl.get(f"{W}val", "0")) if ilvl is not None else list_styles.get(style_id or "", 0)
                )
                text = "  " * depth + "- " + text
            yield Block(text, tuple(t for _, t in stack))
