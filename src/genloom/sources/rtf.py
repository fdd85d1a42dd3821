"""RTF documents (striprtf), with the code page the file declares."""

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
from genloom.sources._files.text import clean_text
from genloom.sources.html import markdown_blocks

_ANSICPG = re.compile(rb"\\ansicpg(\d+)")
_CODEPAGES = {"10000": "mac_roman", "10007": "mac_cyrillic", "65001": "utf-8", "437": "cp437", "850": "cp850"}


@SOURCES.register("rtf")
class RtfSource(FileSource):
    """RTF documents, one record per document: control words stripped with striprtf.

    Escaped characters (``\\'e9``) are decoded with the code page the file declares
    (``\\ansicpg1252``, ``\\ansicpg10000`` = Mac Roman...), else cp1252. Quarantined: ``corrupt``
    (not RTF), ``no_text``.
    """

    type: Literal["rtf"] = "rtf"
    #: files larger than this are quarantined as ``too_large``
    max_rtf_mb: float = Field(256.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("rtf",)
    default_include: ClassVar[tuple[str, ...]] = ("*.rtf",)
    extensions: ClassVar[tuple[str, ...]] = ("rtf",)
    magic: ClassVar[tuple[bytes, ...]] = (b"{\\rtf",)
    signature_required: ClassVar[bool] = True  # RTF is text, but every RTF file starts with {\rtf
    requires: ClassVar[tuple[str, ...]] = ("striprtf",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        from striprtf.striprtf import rtf_to_text

        data = blob.read_bytes(int(self.max_rtf_mb * 1e6))
        if not data.lstrip().startswith(b"{\\rtf"):
            raise RecordError("corrupt", "no {\\rtf header")
        m = _ANSICPG.search(data[:4096])
        cp = m.group(1).decode() if m else "1252"
        encoding = _CODEPAGES.get(cp, f"cp{cp}")
        try:
            "".encode(encoding)
        except LookupError:
            encoding = "cp1252"
        text = rtf_to_text(data.decode("latin-1"), encoding=encoding, errors="replace")
        yield from self.emit_document(blob, markdown_blocks(clean_text(text)), {"encoding": encoding})
