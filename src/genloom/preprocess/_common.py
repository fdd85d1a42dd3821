"""Helpers shared by the preprocessing steps: word splitting and mapping (column output and spaCy
loading are genloom.core.text_columns, shared with the feature steps)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa

#: words (letters, digits, inner apostrophes and hyphens) and the runs between them
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def map_words(text: str, fn: Callable[[str], str | None]) -> str:
    """Apply ``fn`` to every word of ``text``; a None result deletes the word and one space next to it."""
    out: list[str] = []
    pos = 0
    for m in WORD_RE.finditer(text):
        out.append(text[pos : m.start()])
        new = fn(m.group(0))
        if new is None:
            if out and out[-1].endswith(" "):
                out[-1] = out[-1][:-1]
            elif text[m.end() : m.end() + 1] == " ":
                pos = m.end() + 1
                continue
        else:
            out.append(new)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def map_text_or_tokens(col: pa.ChunkedArray | pa.Array, fn: Callable[[str], str | None]) -> pa.Array:
    """Apply a word function to a string column (word by word) or a list-of-strings column (token by token)."""
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        out_lists = []
        for toks in col.to_pylist():
            if toks is None:
                out_lists.append(None)
                continue
            new = [fn(t) for t in toks]
            out_lists.append([t for t in new if t is not None])
        return pa.array(out_lists, pa.list_(pa.string()))
    return pa.array([t if not t else map_words(t, fn) for t in col.to_pylist()], pa.string())
