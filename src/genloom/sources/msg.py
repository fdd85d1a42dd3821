"""Outlook messages (``.msg``, extract-msg): headers, body, attachments read as files."""

from __future__ import annotations

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
from genloom.sources.html import html_to_text, markdown_blocks


@SOURCES.register("msg")
class MsgSource(FileSource):
    """Outlook messages (``.msg``, an OLE2 file of MAPI property streams): one record per message.

    Read with extract-msg. The body is the plain-text body (Outlook's RTF-only bodies are
    de-encapsulated by extract-msg), else the HTML body through the HTML reader; the subject heads
    the text. Headers (subject, from, to, cc, date, message id) and attachment names go to
    ``meta``. Attachments, embedded messages included, are read by their own format's reader with
    ids ``<mail>!<attachment name>``, under the same limits as archive members, like the ``eml``
    reader. Detected by content (the ``__properties_version1.0`` and ``__substg1.0_*`` streams at
    the root), so a text file named ``.msg`` stays text. Quarantined: ``corrupt``,
    ``unsupported_format`` (an Outlook item extract-msg cannot read), ``too_large``, ``no_text``.
    """

    type: Literal["msg"] = "msg"
    #: read attachments (as files of their own format)
    attachments: bool = True
    #: prefer the HTML body over the plain one when both exist
    prefer_html: bool = False
    #: messages larger than this are quarantined as ``too_large``
    max_msg_mb: float = Field(256.0, gt=0)

    formats: ClassVar[tuple[str, ...]] = ("msg",)
    default_include: ClassVar[tuple[str, ...]] = ("*.msg",)
    # no extension: ``.msg`` also names text files (Tcl and ROS message catalogs) that must stay
    # text, so an Outlook message is recognised by its MAPI property streams alone
    ole_streams: ClassVar[tuple[tuple[str, ...], ...]] = (("__properties_version1.0", "__substg1.0_*"),)
    requires: ClassVar[tuple[str, ...]] = ("extract_msg",)
    extra: ClassVar[str] = "docs"

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        import extract_msg
        from extract_msg.exceptions import UnrecognizedMSGTypeError, UnsupportedMSGTypeError

        if blob.size > self.max_msg_mb * 1e6:
            raise RecordError("too_large", f"{blob.size} bytes (max_msg_mb {self.max_msg_mb:g})")
        try:
            msg = extract_msg.openMsg(str(blob.path))
        except (UnsupportedMSGTypeError, UnrecognizedMSGTypeError) as e:
            raise RecordError("unsupported_format", f"Outlook item extract-msg cannot read: {e}") from e
        except Exception as e:  # extract-msg and olefile raise many kinds on damaged files
            raise RecordError("corrupt", f"not a readable MSG: {type(e).__name__}: {e}") from e
        try:
            meta = _headers(msg)
            body = self._body(msg)
            attached = _attachments(msg) if self.attachments else []
        finally:
            msg.close()
        if attached:
            meta["attachments"] = [name for name, _ in attached]
        subject = meta.get("subject", "")
        text = f"{subject}\n\n{body}".strip() if subject else body
        if text:
            yield from self.emit_document(blob, markdown_blocks(text), meta)
        yield from self.read_attached(blob, attached)

    def _body(self, msg: Any) -> str:
        plain = getattr(msg, "body", None) or ""
        html = getattr(msg, "htmlBody", None) if self.prefer_html or not plain.strip() else None
        if html:
            text, _ = html_to_text(html.decode("utf-8", "replace") if isinstance(html, bytes) else html)
            if text.strip():
                return clean_text(text)
        return clean_text(plain)


def _headers(msg: Any) -> dict[str, Any]:
    """Subject, from, to, cc, date and message id of a message, where present."""
    meta: dict[str, Any] = {}
    for name, attr in (
        ("subject", "subject"),
        ("from", "sender"),
        ("to", "to"),
        ("cc", "cc"),
        ("message_id", "messageId"),
    ):
        value = getattr(msg, attr, None)
        if value:
            meta[name] = " ".join(str(value).split())
    date = getattr(msg, "date", None)
    if date is not None:
        meta["date"] = date.isoformat()
    return meta


def _attachments(msg: Any) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each attachment; an embedded message is exported as a ``.msg`` file."""
    out: list[tuple[str, bytes]] = []
    for i, att in enumerate(getattr(msg, "attachments", []) or []):
        data = att.data
        name = Path(att.longFilename or att.shortFilename or f"attachment-{i}").name
        if hasattr(data, "exportBytes"):  # an embedded Outlook item
            payload = data.exportBytes()
            if not name.lower().endswith(".msg"):
                name += ".msg"
        elif isinstance(data, bytes):
            payload = data
        else:
            continue  # a web link or a broken attachment holds no bytes
        if name in {n for n, _ in out}:
            name = f"{i}-{name}"  # two attachments with one name keep distinct ids
        out.append((name, payload))
    return out
