"""E-mail messages (``.eml``, stdlib email): headers, plain or HTML body, attachments read as files."""

from __future__ import annotations

import email
import email.policy
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
from genloom.sources._files.encoding import sniff_encoding, wide_unicode
from genloom.sources._files.text import clean_text
from genloom.sources.html import html_to_text, markdown_blocks

# how the first header line of a saved message starts (mbox From_ line, Received:, Return-Path:...)
_HEADER_STARTS = (b"From ", b"Recei", b"Retur", b"MIME-", b"Messa", b"Deliv")


@SOURCES.register("eml")
class EmlSource(FileSource):
    """E-mail messages (``.eml``, RFC 5322/MIME): one record per message, attachments read as files.

    The body is the ``text/plain`` part, else the ``text/html`` part through the HTML reader; the
    subject heads the text. Headers (subject, from, to, cc, date, message id) and attachment names
    go to ``meta``. Attachments (and forwarded ``message/rfc822`` parts) are read by their own
    format's reader with ids ``<mail>!<attachment name>``, under the same limits as archive
    members. A whole file in UTF-16 is decoded first. Quarantined: ``corrupt``, ``no_text``.
    """

    type: Literal["eml"] = "eml"
    #: read attachments (as files of their own format)
    attachments: bool = True
    #: prefer the HTML body over the plain one when both exist
    prefer_html: bool = False
    #: messages larger than this are quarantined as ``too_large``
    max_eml_mb: float = Field(256.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("eml",)
    default_include: ClassVar[tuple[str, ...]] = ("*.eml",)
    extensions: ClassVar[tuple[str, ...]] = ("eml",)

    @classmethod
    def sniff(cls, head: bytes, ext: str) -> bool:
        """A file without an extension whose first line is a mail header (``From ``, ``Received:``...)."""
        return ext == "" and head.lstrip()[:5] in _HEADER_STARTS

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        data = blob.read_bytes(int(self.max_eml_mb * 1e6))
        wide = (
            sniff_encoding(data[:4096])
            if data.startswith((b"\xff\xfe", b"\xfe\xff"))
            else wide_unicode(data[:4096])
        )
        if wide:  # a message saved as UTF-16/32 (with or without a byte order mark)
            data = data.decode(wide, errors="replace").encode("utf-8")
        msg = email.message_from_bytes(data, policy=email.policy.default)
        if not msg.keys():
            raise RecordError("corrupt", "no e-mail headers")
        meta: dict[str, Any] = {}
        for name in ("subject", "from", "to", "cc", "date", "message-id"):
            value = msg.get(name)
            if value:
                meta[name.replace("-", "_")] = " ".join(str(value).split())
        body = self._body(msg)
        names = [p.get_filename() or p.get_content_type() for p in msg.iter_attachments()]
        if names:
            meta["attachments"] = names
        subject = meta.get("subject", "")
        text = f"{subject}\n\n{body}".strip() if subject else body
        if text:
            yield from self.emit_document(blob, markdown_blocks(text), meta)
        if self.attachments:
            yield from self.read_attached(blob, _attached_files(msg))

    def _body(self, msg: Any) -> str:
        prefs = ("html", "plain") if self.prefer_html else ("plain", "html")
        part = msg.get_body(preferencelist=prefs)
        if part is None:
            return ""
        try:
            content = part.get_content()
        except (LookupError, UnicodeError):
            content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        if part.get_content_subtype() == "html":
            content, _ = html_to_text(content)
        return clean_text(content)


def _attached_files(msg: Any) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of each attachment; a forwarded message becomes an ``.eml`` file."""
    for i, part in enumerate(msg.iter_attachments()):
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            payload = bytes(inner[0] if isinstance(inner, list) else inner) if inner else b""
            yield f"attachment-{i}.eml", payload
        else:
            yield Path(part.get_filename() or f"attachment-{i}").name, part.get_payload(decode=True) or b""
