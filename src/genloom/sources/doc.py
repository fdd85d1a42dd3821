"""Legacy Word 97-2003 ``.doc`` files, through antiword, catdoc or LibreOffice."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.text import clean_text
from genloom.sources._files.tools import which
from genloom.sources.html import markdown_blocks

INSTALL_HINT = "apt-get install antiword (or catdoc, or libreoffice-writer-nogui)"


def _run(cmd: list[str], timeout: float) -> str | None:
    try:
        out = subprocess.run(
            cmd, capture_output=True, timeout=timeout, check=False, env={**os.environ, "LC_ALL": "C.UTF-8"}
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.decode("utf-8", "replace")
    return text if out.returncode == 0 and text.strip() else None


def doc_to_text(path: Path, timeout: float = 120) -> tuple[str, str]:
    """Text of a .doc and the tool that read it: antiword, then catdoc, then LibreOffice headless.

    antiword keeps tables and paragraphs best but returns nothing on very small files, so catdoc
    and LibreOffice are fallbacks. RecordError ``missing_dependency`` when none is installed.
    """
    tools = []
    if which("antiword"):
        tools.append(("antiword", ["antiword", "-w", "0", "-m", "UTF-8.txt", str(path)]))
    if which("catdoc"):
        tools.append(("catdoc", ["catdoc", "-w", "-d", "utf-8", str(path)]))
    soffice = which("soffice", "libreoffice")
    if not tools and soffice is None:
        raise RecordError("missing_dependency", f"no .doc converter installed: {INSTALL_HINT}")
    for name, cmd in tools:
        text = _run(cmd, timeout)
        if text is not None:
            return text, name
    if soffice is not None:
        out_dir = tempfile.mkdtemp(prefix="genloom-soffice-")
        try:
            _run([soffice, "--headless", "--convert-to", "txt:Text", "--outdir", out_dir, str(path)], timeout)
            produced = list(Path(out_dir).glob("*.txt"))
            if produced:
                return produced[0].read_text("utf-8", errors="replace"), "libreoffice"
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    raise RecordError("corrupt", f"no converter could read this .doc (tried {[t for t, _ in tools]})")


@SOURCES.register("doc")
class DocSource(FileSource):
    """Legacy Word ``.doc`` (OLE2 binary) files, one record per document.

    Read with ``antiword`` (tables kept as ``|`` rows), else ``catdoc`` (antiword returns nothing
    on very small files), else LibreOffice headless. A ``.doc`` that is really a DOCX (ZIP) is
    detected and read by the ``docx`` reader. Quarantined: ``missing_dependency`` (no converter;
    the detail names the Debian packages), ``corrupt``, ``no_text``.
    """

    type: Literal["doc"] = "doc"
    #: seconds a converter may run on one file
    timeout_s: float = Field(120.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("doc",)
    default_include: ClassVar[tuple[str, ...]] = ("*.doc", "*.dot")
    extensions: ClassVar[tuple[str, ...]] = ("doc", "dot")
    ole_streams: ClassVar[tuple[tuple[str, ...], ...]] = (("WordDocument",),)
    signature_required: ClassVar[bool] = True

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        text, tool = doc_to_text(blob.path, self.timeout_s)
        yield from self.emit_document(blob, markdown_blocks(clean_text(text)), {"converter": tool})
