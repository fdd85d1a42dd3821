"""Legacy PowerPoint 97-2003 ``.ppt`` files, through ``catppt`` (Debian package ``catdoc``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import Rejected
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.ole import ole_root_names
from genloom.sources._files.text import clean_text
from genloom.sources._files.tools import which

INSTALL_HINT = "apt-get install catdoc (it provides catppt)"


@SOURCES.register("ppt")
class PptSource(FileSource):
    """Legacy PowerPoint ``.ppt``/``.pps`` (OLE2 binary) files, one record per presentation (or chunks).

    Read with ``catppt`` from the ``catdoc`` package, which prints the text atoms of the
    ``PowerPoint Document`` stream: slide titles and body placeholders, one slide after another
    (each is a block, so chunks end between slides). catppt gives no reliable slide numbers (a
    slide without text leaves no mark), so there is no ``#page=N``; text boxes drawn outside the
    layout placeholders, tables and speaker notes are not in its output. A ``.ppt`` that is really a
    PPTX (ZIP) is read by the ``pptx`` reader. Quarantined: ``missing_dependency`` (no catppt; the
    detail names the Debian package), ``encrypted`` (an ``EncryptedSummary`` stream: a
    password-protected presentation), ``corrupt``, ``no_text``.
    """

    type: Literal["ppt"] = "ppt"
    #: seconds catppt may run on one file
    timeout_s: float = Field(120.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("ppt",)
    default_include: ClassVar[tuple[str, ...]] = ("*.ppt", "*.pps")
    extensions: ClassVar[tuple[str, ...]] = ("ppt", "pps")
    ole_streams: ClassVar[tuple[tuple[str, ...], ...]] = (("PowerPoint Document",),)
    signature_required: ClassVar[bool] = True

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        if "encryptedsummary" in (ole_root_names(blob.path) or set()):
            raise RecordError("encrypted", "password-protected PowerPoint file (EncryptedSummary stream)")
        if which("catppt") is None:
            raise RecordError("missing_dependency", f"no catppt for .ppt files: {INSTALL_HINT}")
        try:
            out = subprocess.run(
                ["catppt", "-d", "utf-8", str(blob.path)],
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
                env={**os.environ, "LC_ALL": "C.UTF-8"},
            )
        except subprocess.TimeoutExpired as e:
            raise RecordError("corrupt", f"catppt ran past timeout_s ({self.timeout_s:g} s)") from e
        error = out.stderr.decode("utf-8", "replace").strip()
        if out.returncode != 0 or "not OLE file" in error:
            raise RecordError("corrupt", f"catppt could not read it: {error[:500] or out.returncode}")
        text = out.stdout.decode("utf-8", "replace")
        # catppt ends each slide's text with a form feed
        blocks = [Block(part) for part in (clean_text(p) for p in text.split("\f")) if part]
        yield from self.emit_document(blob, blocks, {"converter": "catppt"})
