"""Documents as blocks with structure (sections, pages), cut into chunks of a target size.

A reader turns a document into :class:`Block` pieces (paragraphs, headings, tables, page texts);
:func:`chunk_blocks` groups them into chunks of about ``chunk.size`` characters or tokens, ending
at a paragraph or sentence boundary, starting a new chunk where the section changes, with overlap.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genloom.sources._files.text import is_blank


class ChunkConfig(BaseModel):
    """How long documents are cut into chunks (``chunk: {size: 2000, overlap: 200}``).

    Sizes are in characters, or in tokens of a tokenizer on disk with ``unit: tokens`` and
    ``tokenizer: path/to/tokenizer.json`` (a Hugging Face ``tokenizers`` file, or a model folder
    holding one), so chunks fit a model's context exactly.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: target chunk size (in ``unit``); a chunk ends at a paragraph or sentence boundary at or below it
    size: int = Field(2000, ge=8)
    #: repeated from the end of one chunk at the start of the next (cut at a word boundary)
    overlap: int = Field(200, ge=0)
    #: start a new chunk when the section (heading path, page) changes and the current one holds at least this much
    min_size: int = Field(200, ge=0)
    #: what ``size``, ``overlap`` and ``min_size`` count
    unit: Literal["chars", "tokens"] = "chars"
    #: with ``unit: tokens``: a tokenizer.json, or a folder holding one (nothing is downloaded)
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ChunkConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        if self.unit == "tokens":
            if not self.tokenizer:
                raise ValueError("unit: tokens needs tokenizer: a tokenizer.json path or a model folder")
            # a relative path is checked by the source, against the pipeline file's folder
            if (
                Path(self.tokenizer).expanduser().is_absolute()
                and not tokenizer_file(self.tokenizer).is_file()
            ):
                raise ValueError(f"no tokenizer.json at {self.tokenizer!r}")
        elif self.size < 50:
            raise ValueError(f"size {self.size} characters is too small: use at least 50")
        return self


def tokenizer_file(path: str) -> Path:
    """The tokenizer.json that ``path`` names: the file itself, or the one inside a folder."""
    p = Path(path).expanduser()
    return p / "tokenizer.json" if p.is_dir() else p


class _Measure:
    """Lengths in characters, or in tokens of a ``tokenizers`` file (cut points from its offsets)."""

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tok = _load_tokenizer(str(tokenizer_file(tokenizer))) if tokenizer else None

    def __call__(self, text: str) -> int:
        return len(text) if self.tok is None else len(self._offsets(text))

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self.tok.encode(text, add_special_tokens=False).offsets)

    def prefix_chars(self, text: str, n: int) -> int:
        """How many leading characters of ``text`` hold at most ``n`` units (all of it if it fits)."""
        if self.tok is None:
            return min(n, len(text))
        offsets = self._offsets(text)
        return len(text) if len(offsets) <= n else offsets[n][0]

    def suffix_chars(self, text: str, n: int) -> int:
        """How many trailing characters of ``text`` hold at most ``n`` units."""
        if self.tok is None:
            return min(n, len(text))
        offsets = self._offsets(text)
        if n <= 0 or not offsets:
            return 0
        return len(text) - offsets[-n][0] if len(offsets) >= n else len(text)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


@dataclass
class Block:
    """A piece of a document (paragraph, heading, table, page text) with where it sits."""

    text: str
    section: tuple[str, ...] = ()
    page: int | None = None
    heading: bool = False
    #: facts about this piece that go to its record's meta (``{"ocr": True}``)
    meta: dict[str, Any] | None = None


def _split_long(text: str, size: int, measure: _Measure) -> list[str]:
    """Cut a paragraph longer than ``size`` (units of ``measure``) at sentence ends, then spaces, then hard."""
    pieces: list[str] = []
    rest = text
    while (limit := measure.prefix_chars(rest, size)) < len(rest):
        limit = max(1, limit)
        window = rest[:limit]
        cut = max(window.rfind(". "), window.rfind("? "), window.rfind("! "), window.rfind("\n"))
        if cut < limit // 3:
            cut = window.rfind(" ")
        if cut < limit // 3:
            cut = limit - 1
        pieces.append(rest[: cut + 1].strip())
        rest = rest[cut + 1 :].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _overlap_tail(text: str, n: int, measure: _Measure) -> str:
    if n <= 0 or not text:
        return ""
    k = measure.suffix_chars(text, n)
    tail = text[-k:] if k else ""
    sp = tail.find(" ")
    return tail[sp + 1 :] if 0 <= sp < len(tail) - 1 and len(text) > k else tail


def chunk_blocks(
    blocks: Iterable[Block], cfg: ChunkConfig, tokenizer: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Group blocks into chunks of about ``cfg.size`` characters (or tokens), streaming.

    A chunk ends before the block that would push it past the size; a new section (heading path or
    page) starts a new chunk once the current one holds ``min_size``. The next chunk begins with
    the last ``overlap`` characters (tokens) of the previous one. Yields (text, meta) with the
    chunk's position (index, start and end offsets in the document without overlap), section path
    and pages. ``tokenizer`` is ``cfg.tokenizer`` resolved by the source (relative paths are
    relative to the pipeline file's folder).
    """
    parts: list[str] = []
    length = 0
    first: Block | None = None
    last_page: int | None = None
    offset = 0
    start = 0
    index = 0
    carry = ""
    carry_len = 0  # the carry's length in units, plus its separator
    tokens = cfg.unit == "tokens"
    measure = _Measure((tokenizer or cfg.tokenizer) if tokens else None)
    sep = 1 if tokens else 2  # the blank line between parts
    piece_size = max(cfg.size - cfg.overlap - sep, 1 if tokens else 50)

    def flush() -> tuple[str, dict[str, Any]]:
        nonlocal parts, length, first, index, start, carry, carry_len
        body = "\n\n".join(parts)
        text = f"{carry} {body}".strip() if carry else body
        meta: dict[str, Any] = {"chunk": index, "start": start, "end": start + len(body)}
        if first is not None and first.section:
            meta["section"] = list(first.section)
        if first is not None and first.meta:
            meta.update(first.meta)
        if first is not None and first.page is not None:
            meta["page"] = first.page
            if last_page is not None and last_page != first.page:
                meta["page_end"] = last_page
        carry = _overlap_tail(body, cfg.overlap, measure)
        carry_len = measure(carry) + 1 if carry else 0
        if tokens:
            meta["tokens"] = measure(text)
        index += 1
        start = offset
        parts, length, first = [], 0, None
        return text, meta

    for block in blocks:
        text = block.text.strip("\n").rstrip()  # leading spaces are list indentation: kept
        if is_blank(text):
            continue
        for piece in _split_long(text, piece_size, measure):
            new_section = first is not None and (block.section != first.section or block.page != first.page)
            n = measure(piece)
            too_big = length + n + sep > cfg.size - carry_len
            if parts and (too_big or (new_section and length >= cfg.min_size)):
                yield flush()
            if first is None:
                first = block
                start = offset
            parts.append(piece)
            length += n + sep
            last_page = block.page
            offset += len(piece) + 2
    if parts:
        yield flush()


def section_path(stack: list[tuple[int, str]], level: int, title: str) -> list[tuple[int, str]]:
    """The heading stack after a heading of ``level`` (1 = top) titled ``title``."""
    kept = [(lv, t) for lv, t in stack if lv < level]
    return [*kept, (level, title)]
