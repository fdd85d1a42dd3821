"""The format of a file, by content first, from what each registered reader declares.

Every reader (a :class:`~genloom.sources._files.base.FileSource` registered in ``SOURCES``) states
what identifies its format as class attributes: ``extensions``, ``magic`` (with
``magic_within``), ``zip_mimetypes`` and ``zip_members`` (ZIP containers), ``ole_streams`` (OLE2
containers), ``signature_required``, and a ``sniff`` method for text formats. The tables here are
built from the registry at first use (and again when it changes), so a new format is one reader
file; nothing in this module names a reader.

The order, content first and the extension only breaking ties (a DOCX named ``.doc`` is DOCX):

1. a ZIP file: the ``mimetype`` member (ODF, EPUB) decides alone, an unknown one giving
   ``unsupported_zip``; else the first ``zip_members`` signature found, weak ones (which also need
   the format's extension) first, then those naming more members, then by format name; else an
   archive (``zip``); ``broken_zip`` when the container is unreadable;
2. an OLE2 file: the first ``ole_streams`` signature found among the root stream names, those
   naming more streams first, then an encrypted OOXML package, then by format name; else the
   format of the extension, else ``ole``;
3. magic bytes: those searched in the first ``magic_within`` bytes, the prefixes of formats with
   ``signature_required``, compressed archives (gz, bz2, xz, ``tar`` when one holds a tar), a tar
   header, then the other prefixes (Parquet's ``PAR1``), each group by format name;
4. the extension: a format with ``signature_required`` whose content had none is ``mismatch``
   (quarantined as ``corrupt``); known binary kinds (images, audio, executables...) are
   ``binary``; a name of plain text is offered to the ``sniff`` of every format (an HTML page
   named ``.txt``);
5. no known extension: ``binary`` when the bytes are not text, else the first format whose
   ``sniff`` claims it (by format name), else plain ``text``.

Besides reader names, :func:`detect_format` returns an archive kind (``zip``, ``tar``, ``gz``,
``bz2``, ``xz``), ``encrypted_ooxml``, or one of ``empty``, ``mismatch``, ``broken_zip``,
``unsupported_zip``, ``ole``, ``binary``, which the base class turns into a quarantine reason.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genloom.core.registry import SOURCES
from genloom.sources._files.archives import (
    ARCHIVE_EXTENSIONS,
    ARCHIVE_FORMATS,
    ZIP_MAGIC,
    compressed_kind,
    is_tar_header,
)
from genloom.sources._files.blob import Blob
from genloom.sources._files.crypto import ENCRYPTED_OOXML, ENCRYPTED_PACKAGE_STREAM
from genloom.sources._files.encoding import wide_unicode
from genloom.sources._files.ole import OLE_MAGIC, ole_root_names, ole_scan

#: what a file is when nothing else claims it
PLAIN_TEXT = "text"
#: the member every OOXML package (DOCX, XLSX, PPTX...) holds
OOXML_CONTENT_TYPES = "[Content_Types].xml"

# formats we know and decline, so they are quarantined as unsupported without reading
UNSUPPORTED_EXTENSIONS = {
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "wav", "mp3", "flac", "ogg", "mp4", "avi",
    "mov", "mkv", "exe", "dll", "so", "bin", "pyc", "class", "jar", "7z", "rar", "sqlite", "db", "npy",
    "npz", "pt", "safetensors", "gpx",
}  # fmt: skip


@dataclass(frozen=True)
class FormatTables:
    """Every registered reader's declarations, arranged in detection order."""

    #: reader name -> reader class, for the readers that declare a format
    readers: dict[str, type]
    #: extension -> format (readers, then archives), used when the content does not decide
    extensions: dict[str, str]
    #: formats whose files always carry a signature (archives included)
    signature_required: frozenset[str]
    #: (magic, within, format): ``magic`` anywhere in the first ``within`` bytes
    searched: tuple[tuple[bytes, int, str], ...]
    #: (prefix, format), checked before archives
    strong_prefixes: tuple[tuple[bytes, str], ...]
    #: (prefix, format), checked after archives
    weak_prefixes: tuple[tuple[bytes, str], ...]
    #: content of a ZIP's ``mimetype`` member -> format
    zip_mimetypes: dict[str, str]
    #: (members, extensions it needs or None, format), in the order they are tried
    zip_members: tuple[tuple[tuple[str, ...], frozenset[str] | None, str], ...]
    #: (lower-case root stream names, format), in the order they are tried
    ole_streams: tuple[tuple[tuple[str, ...], str], ...]
    #: every stream name declared, for OLE2 files whose directory is damaged
    ole_names: tuple[str, ...]
    #: (format, its sniff), for files named as text or not named at all
    sniffers: tuple[tuple[str, Callable[[bytes, str], bool]], ...]
    #: formats that are OOXML packages (what an ``EncryptedPackage`` may hold)
    ooxml: frozenset[str]


_cache: tuple[tuple[tuple[str, type], ...], FormatTables] | None = None


def tables() -> FormatTables:
    """The detection tables of the registered readers (rebuilt when the registry changes)."""
    global _cache
    registered = tuple(SOURCES.items())
    if _cache is None or _cache[0] != registered:
        _cache = (registered, _build(registered))
    return _cache[1]


def declares_format(cls: type) -> bool:
    """Whether ``cls`` is a file reader that says how to recognise its format."""
    from genloom.sources._files.base import FileSource

    if not (isinstance(cls, type) and issubclass(cls, FileSource)):
        return False
    return bool(
        cls.extensions or cls.magic or cls.zip_mimetypes or cls.zip_members or cls.ole_streams or _sniffs(cls)
    )


def _sniffs(cls: Any) -> bool:
    """Whether ``cls`` overrides ``FileSource.sniff``."""
    from genloom.sources._files.base import FileSource

    return cls.sniff.__func__ is not FileSource.sniff.__func__  # type: ignore[attr-defined, no-any-return]


def _build(registered: tuple[tuple[str, type], ...]) -> FormatTables:
    readers: dict[str, Any] = {name: cls for name, cls in registered if declares_format(cls)}
    extensions: dict[str, str] = {}
    for name, cls in readers.items():
        for ext in cls.extensions:
            extensions.setdefault(ext.lower().lstrip("."), name)
    for ext, kind in ARCHIVE_EXTENSIONS.items():
        extensions.setdefault(ext, kind)
    required = {name for name, cls in readers.items() if cls.signature_required}
    searched: list[tuple[bytes, int, str]] = []
    strong: list[tuple[bytes, str]] = []
    weak: list[tuple[bytes, str]] = []
    for name, cls in readers.items():
        for magic in cls.magic:
            if cls.magic_within:
                searched.append((magic, cls.magic_within, name))
            else:
                (strong if name in required else weak).append((magic, name))
    # weak signatures (which need the extension too) first, then those naming more members
    zip_members = sorted(
        (
            (
                tuple(members),
                frozenset(e.lower() for e in cls.extensions) if cls.weak_zip_members else None,
                name,
            )
            for name, cls in readers.items()
            for members in cls.zip_members
        ),
        key=lambda s: (s[1] is None, -len(s[0]), s[2]),
    )
    ole = [
        (tuple(n.lower() for n in streams), name, 1)
        for name, cls in readers.items()
        for streams in cls.ole_streams
    ]
    ole.append(((ENCRYPTED_PACKAGE_STREAM.lower(),), ENCRYPTED_OOXML, 0))
    # those naming more streams first, then the encrypted package (no reader's), then by name
    ole.sort(key=lambda s: (-len(s[0]), s[2], s[1]))
    ole_names = sorted({n.rstrip("*") for streams, _, _ in ole for n in streams})
    return FormatTables(
        readers=readers,
        extensions=extensions,
        signature_required=frozenset(required | set(ARCHIVE_FORMATS)),
        searched=tuple(searched),
        strong_prefixes=tuple(strong),
        weak_prefixes=tuple(weak),
        zip_mimetypes={m: name for name, cls in readers.items() for m in cls.zip_mimetypes},
        zip_members=tuple(zip_members),
        ole_streams=tuple((streams, name) for streams, name, _ in ole),
        ole_names=tuple(ole_names),
        sniffers=tuple((name, cls.sniff) for name, cls in readers.items() if _sniffs(cls)),
        ooxml=frozenset(
            name
            for name, cls in readers.items()
            if any(OOXML_CONTENT_TYPES in members for members in cls.zip_members)
        ),
    )


def format_by_extension(ext: str) -> str | None:
    """The format (reader or archive kind) that the extension ``ext`` names, if any."""
    return tables().extensions.get(ext)


def detect_format(blob: Blob) -> str:
    """The format of ``blob`` by content, then by extension (the order is in the module docstring).

    Returns a reader name (``pdf``, ``docx``, ``excel``...), an archive kind (``zip``, ``tar``, ``gz``,
    ``bz2``, ``xz``), ``encrypted_ooxml`` (an Office file inside an OLE2 encryption container), or
    ``empty``/``mismatch``/``broken_zip``/``unsupported_zip``/``ole``/``binary``.
    """
    t = tables()
    head = blob.head(4096)
    ext = blob.ext
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return _zip_kind(blob.path, ext, t)
    if head.startswith(OLE_MAGIC):
        return _ole_kind(blob.path, ext, t)
    for magic, within, fmt in t.searched:
        if magic in (head[:within] if within <= 4096 else blob.head(within)):
            return fmt
    for magic, fmt in t.strong_prefixes:
        if head.startswith(magic):
            return fmt
    kind = compressed_kind(head, blob.path)
    if kind is not None:
        return kind
    if is_tar_header(head):
        return "tar"
    for magic, fmt in t.weak_prefixes:
        if head.startswith(magic):
            return fmt
    by_ext = t.extensions.get(ext)
    if by_ext in t.signature_required:
        # a format that always carries a signature, by name, whose content has none of the above
        return "mismatch"
    if ext in UNSUPPORTED_EXTENSIONS:
        return "binary"
    if by_ext is not None:
        return (_sniff(head, ext, t) or by_ext) if by_ext == PLAIN_TEXT else by_ext
    if _is_binary(head):
        return "binary"
    return _sniff(head, ext, t) or PLAIN_TEXT


def _sniff(head: bytes, ext: str, t: FormatTables) -> str | None:
    return next((fmt for fmt, sniff in t.sniffers if sniff(head, ext)), None)


def _has(names: set[str], member: str, prefix_marker: str) -> bool:
    if member.endswith(prefix_marker):
        stem = member[: -len(prefix_marker)]
        return any(n.startswith(stem) for n in names)
    return member in names


def _zip_kind(path: Path, ext: str, t: FormatTables) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "mimetype" in names:
                mime = z.read("mimetype")[:100].decode("ascii", "replace").strip()
                return t.zip_mimetypes.get(mime, "unsupported_zip")
            for members, needs_ext, fmt in t.zip_members:
                if needs_ext is not None and ext not in needs_ext:
                    continue
                if all(_has(names, m, "/") for m in members):
                    return fmt
            return "zip"
    except (zipfile.BadZipFile, OSError, EOFError):
        return "broken_zip"


def _ole_kind(path: Path, ext: str, t: FormatTables) -> str:
    names = ole_root_names(path)
    if names is None:  # a damaged directory: look for the names anywhere in the first 32 MiB
        names = ole_scan(path, list(t.ole_names))
    for streams, fmt in t.ole_streams:
        if all(_has(names, s, "*") for s in streams):
            return fmt
    return t.extensions.get(ext, "ole")


def _is_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return False
    sample = head[:4096]
    if wide_unicode(sample) is not None:
        return False
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return control > len(sample) * 0.05
