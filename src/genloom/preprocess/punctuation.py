"""Punctuation removal."""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import Literal

import pyarrow as pa
from pydantic import PrivateAttr

from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column


@lru_cache(maxsize=2)
def unicode_chars(categories: str) -> str:
    """Every code point whose general category starts with one of the letters in ``categories``."""
    return "".join(c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c)[0] in categories)


@PREPROCESSORS.register("punctuation")
class PunctuationMap(Map):
    """Remove punctuation (Unicode category P, every script) and, with ``symbols: true``, symbols (S).

    Punctuation between two letters or digits (``don't``, ``e-mail``, ``3.5``) is kept unless
    ``keep_inner: false``; characters in ``keep`` are never removed. Each removed run becomes
    ``replacement`` (default a space; space runs are then collapsed). On a list-of-tokens column,
    tokens made only of punctuation are dropped. Drops no records.
    """

    type: Literal["punctuation"] = "punctuation"
    column: str = "text"
    output_column: str | None = None
    symbols: bool = False
    keep_inner: bool = True
    keep: str = ""
    replacement: str = " "

    _run: re.Pattern[str] = PrivateAttr()
    _only: re.Pattern[str] = PrivateAttr()

    def setup(self) -> None:
        chars = unicode_chars("PS" if self.symbols else "P")
        cls = "[" + "".join(re.escape(c) for c in chars if c not in self.keep) + "]+"
        self._only = re.compile(cls)
        if self.keep_inner:
            # a run is kept only when it is one mark with a letter or digit on each side
            self._run = re.compile(rf"(?<![^\W_]){cls}|{cls}(?![^\W_])|(?:{cls[:-1]}){{2,}}")
        else:
            self._run = re.compile(cls)

    def _clean(self, text: str) -> str:
        out = self._run.sub(self.replacement, text)
        if self.replacement == " ":
            out = re.sub(r"[ \t]{2,}", " ", out).strip(" ")
        return out

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        col = table.column(self.column)
        if pa.types.is_list(col.type):
            values = pa.array(
                [
                    None if toks is None else [t for t in toks if not self._only.fullmatch(t)]
                    for toks in col.to_pylist()
                ],
                pa.list_(pa.string()),
            )
        else:
            values = pa.array([t if not t else self._clean(t) for t in col.to_pylist()], pa.string())
        return write_column(table, self.output_column or self.column, values)
