"""Plain text and Markdown files, streamed line by line."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block, chunk_blocks, section_path
from genloom.sources._files.encoding import DecodedStream, sniff_encoding
from genloom.sources._files.text import is_blank

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@SOURCES.register("text")
class TextSource(FileSource):
    """Plain text and Markdown (``.txt``, ``.md``, ``.rst``...): one record per file, or chunks.

    The encoding is detected (BOM, UTF-16/32 without a BOM from where its NUL bytes fall, UTF-8,
    then charset-normalizer restricted against its known cp1252 mistakes), mojibake is repaired
    with ftfy, and the text is NFC. A UTF-8 file with a few damaged bytes stays UTF-8: each
    invalid sequence becomes U+FFFD, counted in ``meta.invalid_bytes`` of the record that holds
    it. NUL characters are removed and counted in ``meta.nul_removed``. The file is read as a
    stream: memory stays bounded whatever its size. Markdown ``#`` headings become the section
    path of chunks. Quarantined: ``line_too_long`` (a line over ``max_line_chars``, e.g. a 200 MB
    one-line dump), ``empty_file``, ``no_text``.
    """

    type: Literal["text"] = "text"
    #: repair mojibake (``cafÃ©`` -> ``café``) with ftfy
    fix_text: bool = True
    #: a longer line quarantines the file as ``line_too_long``
    max_line_chars: int = Field(1_000_000, gt=0)
    #: without ``chunk``, a file longer than this is split into ``#part=N`` records at paragraph ends
    max_record_chars: int = Field(10_000_000, gt=0)
    #: force an encoding (``cp1252``) instead of detecting it
    encoding: str | None = None

    formats: ClassVar[tuple[str, ...]] = ("text",)
    default_include: ClassVar[tuple[str, ...]] = ("*.txt", "*.md", "*.markdown", "*.rst", "*.text", "*.log")
    extensions: ClassVar[tuple[str, ...]] = ("txt", "text", "md", "markdown", "rst", "log", "names")
    requires: ClassVar[tuple[str, ...]] = ("charset_normalizer", "ftfy")
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        encoding = self.encoding or sniff_encoding(blob.head(1 << 20))
        markdown = blob.ext in ("md", "markdown")
        meta: dict[str, Any] = {"path": blob.key, "format": "text", "encoding": encoding}
        if markdown:
            meta["markdown"] = True
        with blob.open() as raw, DecodedStream(raw, encoding) as stream:
            yield from self._records(blob, stream, meta, markdown)

    def _records(
        self, blob: Blob, stream: DecodedStream, meta: dict[str, Any], markdown: bool
    ) -> Iterator[dict[str, Any]]:
        blocks = self.blocks(stream, markdown)
        n = 0
        if self.chunk is not None:
            for text, cmeta in chunk_blocks(blocks, self.chunk, self.chunk_tokenizer()):
                n += 1
                yield self.record(
                    f"{blob.key}#chunk={cmeta['chunk']}", text, {**meta, **cmeta}, stream.invalid > 0
                )
        else:
            parts: list[str] = []
            size = 0
            part = 0
            for b in blocks:
                if parts and size + len(b.text) > self.max_record_chars:
                    yield self.record(
                        f"{blob.key}#part={part}",
                        "\n\n".join(parts),
                        {**meta, "part": part},
                        stream.invalid > 0,
                    )
                    part += 1
                    parts, size = [], 0
                parts.append(b.text)
                size += len(b.text) + 2
            if parts:
                n += 1
                key = blob.key if part == 0 else f"{blob.key}#part={part}"
                yield self.record(
                    key, "\n\n".join(parts), {**meta, "part": part} if part else meta, stream.invalid > 0
                )
            n += part
        if n == 0:
            raise RecordError("no_text", "the file holds only whitespace")

    def blocks(self, stream: DecodedStream, markdown: bool) -> Iterator[Block]:
        """Paragraphs (runs of lines between blank lines) of a decoded stream, with their
        Markdown section path. NULs stay in the text for ``record`` to count."""
        fix = _fixer() if self.fix_text else None
        stack: list[tuple[int, str]] = []
        para: list[str] = []
        limit = self.max_line_chars
        line_no = 0
        in_code = False

        def block(lines: list[str]) -> Block:
            text = "\n".join(lines).strip()
            if fix is not None and not text.isascii():
                # ftfy deletes NULs: mend the pieces between them so that record() counts them
                text = "\x00".join(fix(piece) for piece in text.split("\x00"))
            return Block(unicodedata.normalize("NFC", text), tuple(t for _, t in stack))

        f = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline=None)
        try:
            while True:
                line = f.readline(limit + 1)
                if not line:
                    break
                line_no += 1
                if len(line) > limit and not line.endswith("\n"):
                    raise RecordError(
                        "line_too_long",
                        f"line {line_no} is longer than {limit} characters (max_line_chars)",
                    )
                line = line.rstrip("\n").rstrip("\r")
                if markdown and line.lstrip().startswith("```"):
                    in_code = not in_code
                m = _HEADING.match(line) if markdown and not in_code else None
                if m:
                    if para:
                        yield block(para)
                        para = []
                    stack = section_path(stack, len(m.group(1)), m.group(2))
                    b = block([line])
                    b.heading = True
                    yield b
                elif not is_blank(line) or in_code:
                    para.append(line)
                elif para:
                    yield block(para)
                    para = []
        finally:
            f.detach()
        if para:
            yield block(para)


def _fixer() -> Any:
    import ftfy

    return ftfy.fix_text
