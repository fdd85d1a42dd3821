"""Noise removal: control characters, HTML remnants, repeated characters, URLs and emails."""

from __future__ import annotations

import html
import re
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.registry import CLEANERS
from genloom.core.steps import Map, StepContext

URL_RE = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]+[^\s<>\"'()\[\]{}.,;:!?]"
EMAIL_RE = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
# C0/C1 controls except tab and newline, bidi embeddings, invisible operators, BOM, U+FFFD; not the
# zero-width space and joiners (U+200B-D): Javanese, Thai and Khmer break words with U+200B, and
# Persian, Indic scripts and emoji need U+200C/D
CONTROL_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{202a}-\x{202e}\x{2060}-\x{2064}\x{feff}\x{fffd}]"
HTML_BLOCK_RE = r"(?is)<(script|style)\b[^>]*>.*?</(?:script|style)\s*>|<!--.*?-->"
HTML_TAG_RE = r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s+[^<>]*?)?/?>"
HTML_BREAK_RE = r"(?i)<(?:br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>"
ENTITY_RE = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"


@CLEANERS.register("noise")
class NoiseClean(Map):
    """Remove noise from the text: control characters, HTML remnants, character runs, URLs and emails.

    In order: control characters (C0/C1 except tab and newline, bidi embedding controls, invisible
    operators, BOM, U+FFFD; the zero-width space and joiners that Javanese, Thai, Persian and
    Indic scripts need stay) are deleted; HTML ``<script>``/``<style>`` blocks and comments are deleted, block
    tags (``<br>``, ``</p>``...) become newlines, other tags are deleted and entities
    (``&amp;``, ``&#233;``) are decoded; URLs and emails are kept, removed or replaced by
    ``<URL>``/``<EMAIL>``; a character repeated more than ``max_repeat`` times in a row is cut
    to ``max_repeat`` (``soooooo`` -> ``sooo``, ``!!!!!!`` -> ``!!!``; digits and whitespace are left alone).
    Vectorised with pyarrow RE2 kernels; entity decoding runs only on rows that have one.
    Drops nothing. Boilerplate lines repeated across documents are removed by ``boilerplate``,
    spelling by ``spelling``.
    """

    type: Literal["noise"] = "noise"
    column: str = "text"
    output_column: str | None = None
    control_chars: bool = True
    html: bool = True
    urls: Literal["keep", "remove", "mask"] = "keep"
    emails: Literal["keep", "remove", "mask"] = "keep"
    url_mask: str = "<URL>"
    email_mask: str = "<EMAIL>"
    #: longest allowed run of one repeated non-digit character; null keeps every run
    max_repeat: int | None = 3

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        col = table.column(self.column)
        if self.control_chars:
            col = pc.replace_substring_regex(col, pattern=CONTROL_RE, replacement="")
        if self.html:
            col = pc.replace_substring_regex(col, pattern=HTML_BLOCK_RE, replacement="")
            col = pc.replace_substring_regex(col, pattern=HTML_BREAK_RE, replacement="\n")
            col = pc.replace_substring_regex(col, pattern=HTML_TAG_RE, replacement="")
            has_entity = pc.fill_null(pc.match_substring_regex(col, ENTITY_RE), False)
            if pc.any(has_entity).as_py():
                flags = has_entity.to_pylist()
                col = pa.array(
                    [html.unescape(t) if f else t for t, f in zip(col.to_pylist(), flags, strict=True)],
                    pa.string(),
                )
        if self.emails != "keep":
            repl = self.email_mask if self.emails == "mask" else ""
            col = pc.replace_substring_regex(col, pattern=EMAIL_RE, replacement=repl)
        if self.urls != "keep":
            repl = self.url_mask if self.urls == "mask" else ""
            col = pc.replace_substring_regex(col, pattern=URL_RE, replacement=repl)
        if self.max_repeat is not None:
            col = self._cut_runs(col, self.max_repeat)
        target = self.output_column or self.column
        if target in table.column_names:
            return table.set_column(table.column_names.index(target), target, col)
        return table.append_column(target, col)

    @staticmethod
    def _cut_runs(col: pa.ChunkedArray | pa.Array, keep: int) -> pa.ChunkedArray | pa.Array:
        # RE2 has no backreferences, so this one runs in Python (re's search is C-speed)
        run = re.compile(r"([^\d\s])\1{" + str(keep) + ",}")
        out = []
        changed = False
        for t in col.to_pylist():
            if t and run.search(t):
                t = run.sub(lambda m: m.group(1) * keep, t)
                changed = True
            out.append(t)
        return pa.array(out, pa.string()) if changed else col
