"""Cleaning extracted text: whitespace, control characters, NULs (counted), Markdown tables."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_WS = re.compile(r"[ \t\r\f\v\xa0\u2000-\u200a\u202f\u205f\u3000]+")
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f\ufffe\uffff]")
_BLANKS = re.compile(r"\n{3,}")


def clean_text(text: str, nfc: bool = True) -> str:
    """Normalise extracted text: NFC, one space for whitespace runs, at most one blank line.

    Control characters go, except NUL (U+0000): it is left for :meth:`FileSource.record`, which
    removes it and counts it in ``meta.nul_removed`` so that no character disappears unnoticed.
    """
    text = text.replace("\r\n", "\n").replace("\x02", "")
    text = _CONTROL.sub("", text)
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    text = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
    return unicodedata.normalize("NFC", text) if nfc else text


def strip_nul(text: str) -> tuple[str, int]:
    """``text`` without NUL characters, and how many there were."""
    n = text.count("\x00")
    return (text.replace("\x00", ""), n) if n else (text, 0)


def is_blank(text: str) -> bool:
    """True when ``text`` holds nothing but whitespace and NULs."""
    return not text.replace("\x00", "").strip()


def _is_str(col: Any) -> bool:
    return bool(pa.types.is_string(col.type) or pa.types.is_large_string(col.type))


def strip_nul_columns(table: pa.Table) -> tuple[pa.Table, Any]:
    """``table`` with NULs removed from its string columns, and how many each row lost (None
    when no value held one)."""
    total: Any = None
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if _is_str(col) and table.num_rows:
            counts = pc.fill_null(pc.count_substring(col, "\x00"), 0)
            if pc.max(counts).as_py():
                col = pc.replace_substring(col, "\x00", "")
                total = counts if total is None else pc.add(total, counts)
        cols[name] = col
    return (pa.table(cols) if total is not None else table), total


def count_per_row(table: pa.Table, char: str) -> Any:
    """How many times ``char`` occurs in each row's string values (None when it never does)."""
    total: Any = None
    for col in table.columns:
        if _is_str(col) and table.num_rows:
            counts = pc.fill_null(pc.count_substring(col, char), 0)
            if pc.max(counts).as_py():
                total = counts if total is None else pc.add(total, counts)
    return total


def meta_count_fields(**counts: Any) -> list[Any]:
    """Pieces to splice into a meta JSON column built row-wise: ``, "name": n`` where a row's
    count is positive, else an empty string (names with a None count are left out)."""
    out = []
    for name, n in counts.items():
        if n is not None:
            field = pc.binary_join_element_wise(f', "{name}": ', pc.cast(n, pa.string()), "")
            out.append(pc.if_else(pc.greater(n, 0), field, ""))
    return out


def markdown_table(rows: list[list[Any]]) -> str:
    """Rows (the first is the header) as a Markdown table; cells are flattened to one line."""
    if not rows:
        return ""
    width = max(len(r) for r in rows)

    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        return _WS.sub(" ", s.replace("\n", " ")).strip().replace("|", "\\|")

    norm = [[cell(v) for v in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(norm[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in norm[1:]]
    return "\n".join(lines)
