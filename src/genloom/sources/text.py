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
from genloom.sources._files_common import Blob, Block, FileSource, chunk_blocks, section_path, sniff_encoding

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@SOURCES.register("text")
class TextSource(FileSource):
    """Plain text and Markdown (``.txt``, ``.md``, ``.rst``...): one record per file, or chunks.

    The encoding is detected (BOM, strict UTF-8, then charset-normalizer restricted against its
    known cp1252 mistakes), mojibake is repaired with ftfy, and the text is NFC. The file is read
    as a stream: memory stays bounded whatever its size. Markdown ``#`` headings become the
    section path of chunks. Quarantined: ``invalid_utf8`` (a UTF-8 file with damaged bytes, with
    the byte offset), ``line_too_long`` (a line over ``max_line_chars``, e.g. a 200 MB one-line
    dump), ``empty_file``, ``no_text``.
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
    requires: ClassVar[tuple[str, ...]] = ("charset_normalizer", "ftfy")
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        encoding = self.encoding or sniff_encoding(blob.head(1 << 20))
        markdown = blob.ext in ("md", "markdown")
        meta: dict[str, Any] = {"path": blob.key, "format": "text", "encoding": encoding}
        if markdown:
            meta["markdown"] = True
        blocks = self.blocks(blob, encoding, markdown)
        n = 0
        if self.chunk is not None:
            for text, cmeta in chunk_blocks(blocks, self.chunk):
                n += 1
                yield self.record(f"{blob.key}#chunk={cmeta['chunk']}", text, {**meta, **cmeta})
        else:
            parts: list[str] = []
            size = 0
            part = 0
            for b in blocks:
                if parts and size + len(b.text) > self.max_record_chars:
                    yield self.record(f"{blob.key}#part={part}", "\n\n".join(parts), {**meta, "part": part})
                    part += 1
                    parts, size = [], 0
                parts.append(b.text)
                size += len(b.text) + 2
            if parts:
                n += 1
                key = blob.key if part == 0 else f"{blob.key}#part={part}"
                yield self.record(key, "\n\n".join(parts), {**meta, "part": part} if part else meta)
            n += part
        if n == 0:
            raise RecordError("no_text", "the file holds only whitespace")

    def blocks(self, blob: Blob, encoding: str, markdown: bool) -> Iterator[Block]:
        """Paragraphs (runs of lines between blank lines) with their Markdown section path."""
        fix = _fixer() if self.fix_text else None
        stack: list[tuple[int, str]] = []
        para: list[str] = []
        limit = self.max_line_chars
        line_no = 0
        in_code = False

        def block(lines: list[str]) -> Block:
            text = "\n".join(lines).strip()
            if fix is not None and not text.isascii():
                text = fix(text)
            return Block(unicodedata.normalize("NFC", text), tuple(t for _, t in stack))

        with blob.open() as raw:
            f = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline=None)
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
                    elif line.strip() or in_code:
                        para.append(line)
                    elif para:
                        yield block(para)
                        para = []
            except UnicodeDecodeError as e:
                if encoding.lower().replace("-", "_").startswith("utf_8"):
                    raise RecordError(
                        "invalid_utf8", f"invalid UTF-8 near line {line_no + 1}: {e.reason}"
                    ) from e
                raise RecordError("invalid_encoding", f"not valid {encoding} near line {line_no + 1}") from e
            finally:
                f.detach()
        if para:
            yield block(para)


def _fixer() -> Any:
    import ftfy

    return ftfy.fix_text
