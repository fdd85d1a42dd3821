"""What every file source shares: discovery, format detection, archives, fingerprints, chunking.

A file source (``files``, ``pdf``, ``csv``...) subclasses :class:`FileSource` and writes one method,
``read_file(blob)``. Everything else lives here once:

- discovery: globs with ``**``, directories walked recursively, include/exclude patterns, hidden
  files skipped, symlinks followed with loop detection (a directory reached twice is walked once);
- format detection by content (magic bytes, the parts inside a ZIP or OLE2 container), the file
  extension only breaking ties: a DOCX named ``.doc`` is read as DOCX;
- archives (zip, tar, gz, bz2, xz) opened transparently, members extracted one at a time under a
  budget (total uncompressed bytes, compression ratio, member count, nesting depth), so a zip bomb
  is quarantined as ``zip_bomb`` and never unpacked;
- fingerprints per file (size, mtime, SHA-256), so unchanged files are cache hits;
- chunking of long documents by structure (sections, pages, paragraphs) to a target size with
  overlap.
"""

from __future__ import annotations

import bz2
import codecs
import collections
import contextlib
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, ClassVar, Literal, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from genloom.core.errors import ConfigError, MissingDependencyError, RecordError, StepError
from genloom.core.records import Rejected, record_id
from genloom.core.steps import Source

# --------------------------------------------------------------------------------------------
# config pieces shared by every file source


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
            if not _tokenizer_file(self.tokenizer).is_file():
                raise ValueError(f"no tokenizer.json at {self.tokenizer!r}")
        elif self.size < 50:
            raise ValueError(f"size {self.size} characters is too small: use at least 50")
        return self


def _tokenizer_file(path: str) -> Path:
    p = Path(path).expanduser()
    return p / "tokenizer.json" if p.is_dir() else p


class _Measure:
    """Lengths in characters, or in tokens of a ``tokenizers`` file (cut points from its offsets)."""

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tok = _load_tokenizer(str(_tokenizer_file(tokenizer))) if tokenizer else None

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


class ArchiveLimits(BaseModel):
    """Limits applied while unpacking archives; crossing one quarantines the archive as ``zip_bomb``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: total uncompressed bytes over all members (nested archives included)
    max_total_mb: float = Field(4096, gt=0)
    #: uncompressed / compressed size, checked per member and over the whole archive once past 1 MB
    max_ratio: float = Field(100.0, gt=1)
    #: members in one archive (nested archives included)
    max_members: int = Field(10_000, gt=0)
    #: archives inside archives
    max_depth: int = Field(3, ge=0)


# --------------------------------------------------------------------------------------------
# one file to read: on disk, or extracted from an archive into a temporary file


@dataclass
class Blob:
    """One file to read. ``key`` is the stable native key (path, or ``archive!member``)."""

    key: str
    path: Path
    name: str
    depth: int = 0
    budget: ArchiveBudget | None = None
    _head: bytes | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.path.stat().st_size

    @property
    def ext(self) -> str:
        """Lower-case extension without the dot (``pdf``); ``tar.gz`` style doubles give the last part."""
        return Path(self.name).suffix.lower().lstrip(".")

    def head(self, n: int = 8192) -> bytes:
        """The first ``n`` bytes (at most 64 KiB are cached)."""
        if self._head is None or (len(self._head) < n and len(self._head) == 65536):
            with open(self.path, "rb") as f:
                self._head = f.read(max(n, 65536))
        return self._head[:n]

    def open(self) -> BinaryIO:
        """The bytes as a binary stream (the caller closes it)."""
        return open(self.path, "rb")

    def read_bytes(self, limit: int = 512 * 2**20) -> bytes:
        """Every byte; files larger than ``limit`` are quarantined as ``too_large``."""
        size = self.size
        if size > limit:
            raise RecordError(
                "too_large", f"{size} bytes; this format is read whole and the limit is {limit}"
            )
        return self.path.read_bytes()


@dataclass
class ArchiveBudget:
    """What unpacking may still use: shared by nested archives so a 42.zip cannot multiply it."""

    limits: ArchiveLimits
    total: int = 0
    members: int = 0

    def add_member(self, archive: str) -> None:
        """Count one member; too many quarantines the archive."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise RecordError("zip_bomb", f"{archive}: more than {self.limits.max_members} members")

    def add_bytes(self, n: int, archive: str) -> None:
        """Count ``n`` uncompressed bytes; past the total limit quarantines the archive."""
        self.total += n
        if self.total > self.limits.max_total_mb * 1e6:
            raise RecordError(
                "zip_bomb",
                f"{archive}: more than {self.limits.max_total_mb:g} MB uncompressed (max_total_mb)",
            )


# --------------------------------------------------------------------------------------------
# format detection

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ARCHIVE_FORMATS = ("zip", "tar", "gz", "bz2", "xz")

# extension -> format, used when the content does not decide
EXTENSIONS: dict[str, str] = {
    "txt": "text", "text": "text", "md": "text", "markdown": "text", "rst": "text", "log": "text",
    "names": "text",
    "csv": "csv", "tsv": "csv", "tab": "csv",
    "json": "json", "jsonl": "json", "ndjson": "json", "parquet": "json", "pq": "json",
    "html": "html", "htm": "html", "xhtml": "html",
    "pdf": "pdf", "docx": "docx", "docm": "docx", "doc": "doc", "dot": "doc",
    "xlsx": "excel", "xlsm": "excel", "xlsb": "excel", "xls": "excel", "ods": "excel",
    "pptx": "pptx", "odt": "odt", "rtf": "rtf", "eml": "eml",
    "ppt": "ppt", "pps": "ppt", "odp": "odp", "epub": "epub",
    "zip": "zip", "tar": "tar", "tgz": "tar", "gz": "gz", "bz2": "bz2", "xz": "xz",
}  # fmt: skip
# ``.msg`` is left out on purpose: Outlook messages are found by content (OLE2 property streams),
# and the name also marks text files (Tcl and ROS message catalogs) that must stay text

# formats we know and decline, so they are quarantined as unsupported without reading
BINARY_EXTENSIONS = {
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "wav", "mp3", "flac", "ogg", "mp4", "avi",
    "mov", "mkv", "exe", "dll", "so", "bin", "pyc", "class", "jar", "7z", "rar", "sqlite", "db", "npy",
    "npz", "pt", "safetensors", "gpx",
}  # fmt: skip


def _ole_streams(path: Path) -> bytes:
    """Enough of an OLE2 file to find its directory entry names (UTF-16LE), at most 32 MiB."""
    with open(path, "rb") as f:
        return f.read(32 * 2**20)


def _u16(name: str) -> bytes:
    return name.encode("utf-16-le")


_OLE_END = 0xFFFFFFFA  # sector numbers from here up are markers (end of chain, free, FAT...)


def ole_root_names(path: Path) -> set[str] | None:
    """Lower-cased names of the streams and storages at the root of an OLE2 (CFB) file.

    Only the root counts: an e-mail's attached ``.doc`` or encrypted XLSX has its own stream names
    deeper in the tree. None when the header or directory chain cannot be followed ([MS-CFB] 2.2-2.6).
    """
    u32 = "<I"
    try:
        with open(path, "rb") as f:
            header = f.read(512)
            shift = int.from_bytes(header[30:32], "little")
            if len(header) < 512 or shift not in (9, 12):
                return None
            size = 1 << shift
            per = size // 4
            n_fat, dir_start = struct.unpack_from("<II", header, 44)
            difat_next = struct.unpack_from(u32, header, 68)[0]
            fat = [x for x in struct.unpack_from("<109I", header, 76) if x < _OLE_END]
            seen: set[int] = set()
            while difat_next < _OLE_END and len(fat) < n_fat and difat_next not in seen:
                seen.add(difat_next)
                f.seek((difat_next + 1) * size)
                block = struct.unpack(f"<{per}I", f.read(size))
                fat += [x for x in block[:-1] if x < _OLE_END]
                difat_next = block[-1]

            def next_sector(sector: int) -> int:
                index, slot = divmod(sector, per)
                if index >= len(fat):
                    return _OLE_END
                f.seek((fat[index] + 1) * size + slot * 4)
                return struct.unpack(u32, f.read(4))[0]

            raw = bytearray()
            sector, visited = dir_start, set()
            while sector < _OLE_END and sector not in visited and len(raw) < 16 * 2**20:
                visited.add(sector)
                f.seek((sector + 1) * size)
                raw += f.read(size)
                sector = next_sector(sector)
    except (OSError, struct.error):
        return None
    entries = []
    for off in range(0, len(raw) - 127, 128):
        name_len = min(int.from_bytes(raw[off + 64 : off + 66], "little"), 64)
        name = bytes(raw[off : off + max(name_len - 2, 0)]).decode("utf-16-le", "replace")
        left, right, child = struct.unpack_from("<III", raw, off + 68)
        entries.append((name, raw[off + 66], left, right, child))
    if not entries or entries[0][1] != 5:  # entry 0 is the root storage
        return None
    names: set[str] = set()
    stack, walked = [entries[0][4]], set()
    while stack:
        i = stack.pop()
        if i >= len(entries) or i in walked:
            continue
        walked.add(i)
        name, _, left, right, _ = entries[i]
        names.add(name.lower())
        stack += [left, right]
    return names


def _ole_kind(path: Path, ext: str) -> str:
    """The format of an OLE2 file from the stream names at its root (msg, doc, excel, ppt...)."""
    names = ole_root_names(path)
    if names is None:  # a damaged directory: look for the names anywhere in the first 32 MiB
        data = _ole_streams(path).lower()
        wanted = ("__properties_version1.0", "__substg1.0_", "encryptedpackage", "worddocument", "workbook")
        names = {n for n in (*wanted, "book", "powerpoint document") if _u16(n) in data}
    if "__properties_version1.0" in names and any(n.startswith("__substg1.0_") for n in names):
        return "msg"
    if "encryptedpackage" in names:
        return "encrypted_ooxml"
    if "worddocument" in names:
        return "doc"
    if "workbook" in names or "book" in names:
        return "excel"
    if "powerpoint document" in names:
        return "ppt"
    return EXTENSIONS.get(ext, "ole")


def detect_format(blob: Blob) -> str:
    """The format of ``blob`` by content, then by extension.

    Returns a reader name (``pdf``, ``docx``, ``excel``...), an archive kind (``zip``, ``tar``, ``gz``,
    ``bz2``, ``xz``), ``encrypted_ooxml`` (an Office file inside an OLE2 encryption container), or
    ``unknown``/``binary``.
    """
    head = blob.head(4096)
    ext = blob.ext
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(blob.path, ext)
    if head.startswith(OLE_MAGIC):
        return _ole_kind(blob.path, ext)
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if head.startswith(b"\x1f\x8b"):
        return "tar" if _is_tar_stream(blob.path, gzip.open) else "gz"
    if head.startswith(b"BZh"):
        return "tar" if _is_tar_stream(blob.path, bz2.open) else "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar" if _is_tar_stream(blob.path, lzma.open) else "xz"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"PAR1"):
        return "json"  # the json source reads parquet
    by_ext = EXTENSIONS.get(ext)
    if by_ext in (
        "docx", "excel", "pptx", "odt", "odp", "epub", "zip", "pdf", "doc", "ppt", "rtf", "gz", "bz2", "xz",
        "tar",
    ):  # fmt: skip
        # a binary container format by name whose content is none of the magic numbers above
        return "mismatch"
    if ext in BINARY_EXTENSIONS:
        return "binary"
    if by_ext is not None:
        if by_ext == "text" and _looks_like_html(head):
            return "html"
        return by_ext
    if _is_binary(head):
        return "binary"
    if ext == "" and head.lstrip()[:5] in (b"From ", b"Recei", b"Retur", b"MIME-", b"Messa", b"Deliv"):
        return "eml"
    if _looks_like_html(head):
        return "html"
    return "text"


def _zip_kind(path: Path, ext: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "mimetype" in names:
                mime = z.read("mimetype")[:100].decode("ascii", "replace").strip()
                return {
                    "application/vnd.oasis.opendocument.text": "odt",
                    "application/vnd.oasis.opendocument.spreadsheet": "excel",
                    "application/vnd.oasis.opendocument.presentation": "odp",
                    "application/epub+zip": "epub",
                }.get(mime, "unsupported_zip")
            if ext == "epub" and "META-INF/container.xml" in names:
                return "epub"  # an EPUB zipped without its mimetype member
            if "[Content_Types].xml" in names:
                if any(n.startswith("word/") for n in names):
                    return "docx"
                if any(n.startswith("xl/") for n in names):
                    return "excel"
                if any(n.startswith("ppt/") for n in names):
                    return "pptx"
            return "zip"
    except (zipfile.BadZipFile, OSError, EOFError):
        return "broken_zip"


def _is_tar_stream(path: Path, opener: Any) -> bool:
    try:
        with opener(path, "rb") as f:
            block = f.read(512)
        return len(block) == 512 and block[257:262] == b"ustar"
    except (OSError, EOFError, lzma.LZMAError):
        return False


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


def _looks_like_html(head: bytes) -> bool:
    start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml version")) and b"<html" in head.lower()


# --------------------------------------------------------------------------------------------
# discovery

_MAGIC = re.compile(r"[*?\[]")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob (``**`` spans folders, ``*`` and ``?`` stay inside one, ``[...]`` classes) as a regex."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _matches(rel: str, patterns: list[re.Pattern[str]], raw: list[str]) -> bool:
    base = rel.rsplit("/", 1)[-1]
    return any(
        rx.match(rel) or ("/" not in p and rx.match(base)) for rx, p in zip(patterns, raw, strict=True)
    )


def _walk(base: Path, follow_symlinks: bool, hidden: bool, max_depth: int | None = None) -> Iterator[Path]:
    """Every file under ``base`` (at most ``max_depth`` folders down); a directory reached twice
    (a symlink loop) is walked once. Named pipes, sockets and devices are files too: they are
    listed, so the reader can quarantine them, and never opened here."""
    seen: set[tuple[int, int]] = set()
    stack = [(base, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[tuple[Path, int]] = []
        for e in entries:
            if not hidden and e.name.startswith("."):
                continue
            try:
                if e.is_symlink() and not follow_symlinks:
                    continue
                if e.is_dir():
                    if max_depth is None or depth < max_depth:
                        subdirs.append((Path(e.path), depth + 1))
                elif e.is_file() or special_file_kind(Path(e.path)) is not None:
                    yield Path(e.path)
            except OSError:  # a dangling link or a file that vanished
                continue
        stack.extend(reversed(subdirs))


def discover(
    paths: list[str],
    include: list[str],
    exclude: list[str],
    follow_symlinks: bool = True,
    hidden: bool = False,
) -> list[str]:
    """The files matched by ``paths`` (files, folders or globs), filtered, sorted, without duplicates.

    Each result is the path as the glob produced it (POSIX separators): that string is the file's
    stable native key.
    """
    inc = [glob_regex(p) for p in include]
    exc = [glob_regex(p) for p in exclude]
    found: dict[str, None] = {}
    for raw in paths:
        pattern = os.path.expanduser(raw)
        if not _MAGIC.search(pattern):
            p = Path(pattern)
            if p.is_file() or special_file_kind(p) is not None:
                candidates: Iterable[tuple[Path, str]] = [(p, p.name)]
            elif p.is_dir():
                candidates = ((f, f.relative_to(p).as_posix()) for f in _walk(p, follow_symlinks, hidden))
            else:
                continue
        else:
            parts = Path(pattern).parts
            k = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
            base = Path(*parts[:k]) if k else Path(".")
            rest = parts[k:]
            rx = glob_regex("/".join(rest))
            depth = None if any("**" in part for part in rest) else len(rest) - 1
            candidates = (
                (f, rel)
                for f in _walk(base, follow_symlinks, hidden, depth)
                if rx.match(rel := f.relative_to(base).as_posix())
            )
        for f, rel in candidates:
            if inc and not _matches(rel, inc, include):
                continue
            if exc and _matches(rel, exc, exclude):
                continue
            found[Path(os.path.normpath(f)).as_posix()] = None
    return sorted(found)


# --------------------------------------------------------------------------------------------
# fingerprints

_HASHES: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: str) -> str:
    """``size:mtime_ns:sha256`` of a file; the hash is memoised per (path, size, mtime).

    A named pipe, socket or device is never opened (reading a FIFO blocks until a writer comes):
    its fingerprint is ``special:<kind>``.
    """
    st = os.stat(path)
    kind = _special_kind(st.st_mode)
    if kind is not None:
        return f"special:{kind}"
    key = (path, st.st_size, st.st_mtime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(4 * 2**20):
                h.update(block)
        digest = _HASHES[key] = h.hexdigest()
    return f"{st.st_size}:{st.st_mtime_ns}:{digest}"


# --------------------------------------------------------------------------------------------
# archives


class _LimitedWriter:
    """Copies a stream into a file, counting bytes against the member size, ratio and budget."""

    def __init__(self, budget: ArchiveBudget, archive: str, member: str, compressed: int) -> None:
        self.budget = budget
        self.archive = archive
        self.member = member
        self.compressed = max(compressed, 1)
        self.written = 0

    def copy(self, src: IO[bytes], dst: IO[bytes]) -> None:
        limits = self.budget.limits
        while block := src.read(1 << 20):
            dst.write(block)
            self.written += len(block)
            self.budget.add_bytes(len(block), self.archive)
            if self.written > 1e6 and self.written / self.compressed > limits.max_ratio:
                raise RecordError(
                    "zip_bomb",
                    f"{self.archive}!{self.member}: compression ratio over {limits.max_ratio:g} "
                    f"({self.written} bytes from {self.compressed}) (max_ratio)",
                )


@contextlib.contextmanager
def _temp_member(suffix: str) -> Iterator[tuple[Path, BinaryIO]]:
    fd, name = tempfile.mkstemp(prefix="genloom-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield path, f
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _member_suffix(name: str) -> str:
    suffix = "".join(Path(name).suffixes[-2:])
    return suffix if len(suffix) < 20 else Path(name).suffix[:20]


def iter_archive(blob: Blob, kind: str, limits: ArchiveLimits) -> Iterator[Blob]:
    """Members of an archive as blobs backed by temporary files (each deleted once read).

    Raises RecordError ``zip_bomb`` when a limit is crossed, ``corrupt``/``truncated`` when the
    archive cannot be read.
    """
    budget = blob.budget or ArchiveBudget(limits)
    if blob.depth >= limits.max_depth:
        raise RecordError(
            "zip_bomb", f"{blob.key}: archives nested deeper than {limits.max_depth} (max_depth)"
        )
    if kind == "zip":
        yield from _iter_zip(blob, budget)
    elif kind == "tar":
        yield from _iter_tar(blob, budget)
    else:
        opener: Any = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
        inner = blob.name[: -len(Path(blob.name).suffix)] if Path(blob.name).suffix else blob.name + ".out"
        compressed = blob.size
        with _temp_member(_member_suffix(inner)) as (tmp, out):
            try:
                with opener(blob.path, "rb") as src:
                    budget.add_member(blob.key)
                    _LimitedWriter(budget, blob.key, inner, compressed).copy(src, out)
            except (EOFError, OSError, lzma.LZMAError, zlib_error()) as e:
                reason = "truncated" if isinstance(e, EOFError) else "corrupt"
                raise RecordError(reason, f"{blob.key}: {type(e).__name__}: {e}") from e
            out.close()
            yield Blob(f"{blob.key}!{inner}", tmp, inner, blob.depth + 1, budget)


def zlib_error() -> type[Exception]:
    """zlib.error, imported lazily (the stdlib module is tiny, but keep the pattern)."""
    import zlib

    return zlib.error


def _iter_zip(blob: Blob, budget: ArchiveBudget) -> Iterator[Blob]:
    limits = budget.limits
    try:
        z = zipfile.ZipFile(blob.path)
    except zipfile.BadZipFile as e:
        raise RecordError("corrupt", f"{blob.key}: {e}") from e
    with z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        if len(infos) + budget.members > limits.max_members:
            raise RecordError(
                "zip_bomb", f"{blob.key}: {len(infos)} members (max_members {limits.max_members})"
            )
        declared = sum(i.file_size for i in infos)
        if budget.total + declared > limits.max_total_mb * 1e6:
            raise RecordError(
                "zip_bomb",
                f"{blob.key}: declares {declared} bytes uncompressed (max_total_mb {limits.max_total_mb:g})",
            )
        for i in infos:
            if i.file_size > 1e6 and i.file_size / max(i.compress_size, 1) > limits.max_ratio:
                raise RecordError(
                    "zip_bomb",
                    f"{blob.key}!{i.filename}: ratio {i.file_size / max(i.compress_size, 1):.0f} "
                    f"(max_ratio {limits.max_ratio:g})",
                )
        for i in sorted(infos, key=lambda i: i.filename):
            if i.flag_bits & 0x1:
                yield _encrypted_member(blob, i.filename)
                continue
            name = i.filename.rsplit("/", 1)[-1]
            if name.startswith(".") or i.filename.startswith("__MACOSX/"):
                continue
            budget.add_member(blob.key)
            with _temp_member(_member_suffix(name)) as (tmp, out):
                try:
                    with z.open(i) as src:
                        _LimitedWriter(budget, blob.key, i.filename, i.compress_size).copy(src, out)
                except (zipfile.BadZipFile, EOFError, OSError, zlib_error()) as e:
                    raise RecordError("corrupt", f"{blob.key}!{i.filename}: {type(e).__name__}: {e}") from e
                out.close()
                yield Blob(f"{blob.key}!{i.filename}", tmp, name, blob.depth + 1, budget)


def _encrypted_member(blob: Blob, member: str) -> Blob:
    return Blob(f"{blob.key}!{member}", Path(os.devnull), "__encrypted__", blob.depth + 1, blob.budget)


def _iter_tar(blob: Blob, budget: ArchiveBudget) -> Iterator[Blob]:
    writer = _LimitedWriter(budget, blob.key, "", blob.size)
    try:
        tf = tarfile.open(blob.path, mode="r|*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise RecordError("corrupt", f"{blob.key}: {e}") from e
    try:
        with tf:
            for m in tf:
                if not m.isfile():
                    continue
                name = m.name.rsplit("/", 1)[-1]
                budget.add_member(blob.key)
                if m.size > budget.limits.max_total_mb * 1e6 - budget.total:
                    raise RecordError(
                        "zip_bomb", f"{blob.key}!{m.name}: declares {m.size} bytes (max_total_mb)"
                    )
                src = tf.extractfile(m)
                if src is None or name.startswith("."):
                    continue
                with _temp_member(_member_suffix(name)) as (tmp, out):
                    writer.member = m.name
                    writer.copy(src, out)  # the ratio is judged over the whole archive read so far
                    out.close()
                    yield Blob(f"{blob.key}!{m.name}", tmp, name, blob.depth + 1, budget)
    except (tarfile.ReadError, EOFError, lzma.LZMAError, zlib_error()) as e:
        reason = "truncated" if "unexpected end" in str(e).lower() or isinstance(e, EOFError) else "corrupt"
        raise RecordError(reason, f"{blob.key}: {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------------------------
# text helpers


_WS = re.compile(r"[ \t\r\f\v\xa0\u2000-\u200a\u202f\u205f\u3000]+")
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f\ufffe\uffff]")
_BLANKS = re.compile(r"\n{3,}")


def clean_text(text: str, nfc: bool = True) -> str:
    """Normalise extracted text: NFC, one space for whitespace runs, at most one blank line.

    Control characters go, except NUL (U+0000): it is left for :meth:`FileSource.record`, which
    removes it and counts it in ``meta.nul_removed`` so that no character disappears unnoticed.
    """
    text = text.replace("\r\n", "\n").replace("\x02", "")
    text = _CONTROL.sub("", text)
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    text = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
    return unicodedata.normalize("NFC", text) if nfc else text


def strip_nul(text: str) -> tuple[str, int]:
    """``text`` without NUL characters, and how many there were."""
    n = text.count("\x00")
    return (text.replace("\x00", ""), n) if n else (text, 0)


def is_blank(text: str) -> bool:
    """True when ``text`` holds nothing but whitespace and NULs."""
    return not text.replace("\x00", "").strip()


def _is_str(col: Any) -> bool:
    return bool(pa.types.is_string(col.type) or pa.types.is_large_string(col.type))


def strip_nul_columns(table: pa.Table) -> tuple[pa.Table, Any]:
    """``table`` with NULs removed from its string columns, and how many each row lost (None
    when no value held one)."""
    total: Any = None
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if _is_str(col) and table.num_rows:
            counts = pc.fill_null(pc.count_substring(col, "\x00"), 0)
            if pc.max(counts).as_py():
                col = pc.replace_substring(col, "\x00", "")
                total = counts if total is None else pc.add(total, counts)
        cols[name] = col
    return (pa.table(cols) if total is not None else table), total


def count_per_row(table: pa.Table, char: str) -> Any:
    """How many times ``char`` occurs in each row's string values (None when it never does)."""
    total: Any = None
    for col in table.columns:
        if _is_str(col) and table.num_rows:
            counts = pc.fill_null(pc.count_substring(col, char), 0)
            if pc.max(counts).as_py():
                total = counts if total is None else pc.add(total, counts)
    return total


def meta_count_fields(**counts: Any) -> list[Any]:
    """Pieces to splice into a meta JSON column built row-wise: ``, "name": n`` where a row's
    count is positive, else an empty string (names with a None count are left out)."""
    out = []
    for name, n in counts.items():
        if n is not None:
            field = pc.binary_join_element_wise(f', "{name}": ', pc.cast(n, pa.string()), "")
            out.append(pc.if_else(pc.greater(n, 0), field, ""))
    return out


# An undecodable byte sequence first becomes a lone surrogate (which the UTF and code-page codecs
# never produce from valid input, so each one is exactly one invalid sequence), then U+FFFD once counted.
_INVALID = "\ud800"
_MARK_ERRORS = "genloom.mark_invalid"


def _mark_invalid(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return _INVALID, err.end


codecs.register_error(_MARK_ERRORS, _mark_invalid)


class Decoded(NamedTuple):
    """Decoded text, the encoding used, and how many invalid byte sequences became U+FFFD."""

    text: str
    encoding: str
    invalid: int


def decode_as(data: bytes, encoding: str) -> Decoded:
    """Decode ``data`` as ``encoding``; each invalid byte sequence becomes one U+FFFD, counted."""
    text = data.decode(encoding, errors=_MARK_ERRORS)
    n = text.count(_INVALID)
    return Decoded(text.replace(_INVALID, "\ufffd") if n else text, encoding, n)


def decode_bytes(data: bytes, hint: str | None = None) -> Decoded:
    """Decode bytes of unknown encoding (detected by :func:`sniff_encoding`).

    Returns (text, encoding, invalid). Bytes that are valid UTF-8 but for a few damaged sequences
    are read as UTF-8: only the invalid sequences become U+FFFD, and ``invalid`` counts them
    (readers put it in ``meta.invalid_bytes``); guessing a legacy code page would turn the whole
    file into mojibake.
    """
    return decode_as(data, sniff_encoding(data[: 1 << 20], hint))


class DecodedStream(io.RawIOBase):
    """A binary stream read as ``encoding`` and served as UTF-8 bytes, for readers that parse
    UTF-8 (pyarrow's CSV reader, a TextIOWrapper); each invalid sequence becomes U+FFFD and
    ``invalid`` counts those met so far."""

    def __init__(self, raw: BinaryIO, encoding: str, block: int = 1 << 20) -> None:
        super().__init__()
        self.raw = raw
        self.encoding = encoding
        self.invalid = 0
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=_MARK_ERRORS)
        self._block = block
        self._buf = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        """Always true: this is an input stream."""
        return True

    def readinto(self, b: Any) -> int:
        """Fill ``b`` with the next UTF-8 bytes; 0 at the end."""
        while not self._buf and not self._eof:
            chunk = self.raw.read(self._block)
            self._eof = not chunk
            text = self._decoder.decode(chunk, final=self._eof)
            if _INVALID in text:
                self.invalid += text.count(_INVALID)
                text = text.replace(_INVALID, "\ufffd")
            self._buf = memoryview(text.encode("utf-8"))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        """Close this stream and the one it reads."""
        self.raw.close()
        super().close()


def sniff_encoding(sample: bytes, hint: str | None = None) -> str:
    """The encoding of a byte sample: a BOM, ``hint`` when it decodes the sample, UTF-16/32
    without a BOM (from where the NUL bytes fall), UTF-8 (also when a few sequences are damaged,
    see decode_bytes), else a legacy code page (cp1252/cp1251 checks, then charset-normalizer)."""
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if sample.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if hint:
        try:
            codecs.getincrementaldecoder(hint)().decode(sample, final=False)
            return hint
        except (LookupError, UnicodeDecodeError):
            pass
    wide = wide_unicode(sample)
    if wide is not None:
        return wide
    text = codecs.getincrementaldecoder("utf-8")(errors=_MARK_ERRORS).decode(sample, final=False)
    invalid = text.count(_INVALID)
    if not invalid:
        return "utf-8"
    # valid multi-byte characters outnumbering the invalid sequences: UTF-8 that got damaged (a
    # legacy code page rarely forms valid UTF-8 pairs, so its non-ASCII bytes are nearly all invalid)
    multibyte = len(text) - len(text.encode("ascii", "ignore")) - invalid
    if multibyte > invalid:
        return "utf-8"
    guess = _single_byte_guess(sample)
    if guess is not None:
        return guess
    from charset_normalizer import from_bytes

    best = from_bytes(sample[:200_000]).best()
    return best.encoding if best is not None else "cp1252"


_TEXT_CONTROLS = {9, 10, 12, 13}


def _one_script(high: bytes) -> bool:
    """Whether the high bytes of UTF-16 code units come from a few Unicode blocks, as in text
    (ASCII plus one alphabet and its punctuation); ASCII bytes paired at random give many."""
    common = collections.Counter(high).most_common(4)
    return sum(n for _, n in common) * 10 >= len(high) * 9


def wide_unicode(sample: bytes) -> str | None:
    """``utf-16-le``/``-be`` or ``utf-32-le``/``-be`` for text written without a byte order mark.

    Text in these encodings has NUL bytes in a fixed place of each code unit (the high byte of
    ASCII and Latin characters); binary data has them anywhere, ASCII and UTF-8 text none. A
    candidate must also decode cleanly to text with almost no control characters.
    """
    s = sample[:65536]
    n = len(s) - len(s) % 4
    if n < 8 or b"\x00" not in s[:n]:
        return None
    q = n // 4
    z = [s[i:n:4].count(0) for i in range(4)]
    even, odd = z[0] + z[2], z[1] + z[3]
    candidates = []
    if z[3] == q and z[2] * 2 >= q and z[0] * 2 < q:
        candidates.append("utf-32-le")
    elif z[0] == q and z[1] * 2 >= q and z[3] * 2 < q:
        candidates.append("utf-32-be")
    elif odd * 10 >= 2 * q and even * 10 < odd and _one_script(s[1:n:2]):
        candidates.append("utf-16-le")
    elif even * 10 >= 2 * q and odd * 10 < even and _one_script(s[0:n:2]):
        candidates.append("utf-16-be")
    for enc in candidates:
        try:
            text = codecs.getincrementaldecoder(enc)().decode(s[:n], final=False)
        except UnicodeDecodeError:
            continue
        controls = sum(1 for ch in text if ord(ch) < 32 and ord(ch) not in _TEXT_CONTROLS)
        if text and controls * 100 <= len(text):
            return enc
    return None


_WESTERN = set(
    "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿßÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞŒœŠšŽžŸ€‘’‚“”„–—…•°±²³µ·¹º»«¼½¾¿¡£¥§©®™¢¤¦¨ª¬¯´¸×÷†‡‰‹›ˆ˜\xa0"
)


def _single_byte_guess(sample: bytes) -> str | None:
    """cp1252 when every non-ASCII byte decodes to a Western letter or sign, cp1251 when each is
    Cyrillic: charset-normalizer confuses short texts of both with Farsi, Greek or Baltic pages."""
    high = {b for b in sample if b >= 0x80}
    if not high:
        return None
    n_high = sum(1 for b in sample if b >= 0x80)
    n_ascii_letters = sum(1 for b in sample if 65 <= b <= 90 or 97 <= b <= 122)
    letters_mostly_high = n_high > n_ascii_letters  # Cyrillic text; Western text is mostly ASCII
    cyr = bytes(sorted(high)).decode("cp1251", errors="replace")
    if letters_mostly_high and all("\u0400" <= ch <= "\u04ff" or ch in "«»–—…№‘’“”\xa0" for ch in cyr):
        return "cp1251"
    try:
        if not letters_mostly_high and all(ch in _WESTERN for ch in bytes(sorted(high)).decode("cp1252")):
            return "cp1252"
    except UnicodeDecodeError:
        pass
    return None


def markdown_table(rows: list[list[Any]]) -> str:
    """Rows (the first is the header) as a Markdown table; cells are flattened to one line."""
    if not rows:
        return ""
    width = max(len(r) for r in rows)

    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        return _WS.sub(" ", s.replace("\n", " ")).strip().replace("|", "\\|")

    norm = [[cell(v) for v in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(norm[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in norm[1:]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# documents: blocks with structure, assembled into records or chunks


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


def chunk_blocks(blocks: Iterable[Block], cfg: ChunkConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """Group blocks into chunks of about ``cfg.size`` characters (or tokens), streaming.

    A chunk ends before the block that would push it past the size; a new section (heading path or
    page) starts a new chunk once the current one holds ``min_size``. The next chunk begins with
    the last ``overlap`` characters (tokens) of the previous one. Yields (text, meta) with the
    chunk's position (index, start and end offsets in the document without overlap), section path
    and pages.
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
    measure = _Measure(cfg.tokenizer if tokens else None)
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


# --------------------------------------------------------------------------------------------
# the base class


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


class FileSource(Source):
    """Base of every file source: finds files, opens archives, detects formats, chunks documents.

    A subclass declares ``formats`` (the detected formats it reads) and ``default_include`` (the
    file patterns used when ``include`` is empty), and writes ``read_file(blob)``.

    What every file source does the same way:

    - named pipes, sockets and device files that the paths match are never opened (a FIFO would
      block the run): each goes to ``rejected`` as ``not_regular_file`` with its kind as detail,
      and its fingerprint is ``special:<kind>``;
    - NUL characters (U+0000) are removed from every record's text (and its string meta values,
      e.g. a PDF title) and counted in ``meta.nul_removed``;
    - readers that decode bytes (text, CSV, JSON, HTML) detect UTF-16/32 without a byte order
      mark, and read a UTF-8 file with a few damaged bytes as UTF-8: each invalid sequence
      becomes U+FFFD, and a record of such a file counts the U+FFFD of its text in
      ``meta.invalid_bytes``;
    - with ``chunk.unit: tokens``, the tokenizer file is listed by ``files_read()``, so editing it
      re-reads the files.
    """

    #: files, folders or globs (``data/**/*.pdf``); relative paths are relative to the working directory
    paths: list[str]
    #: keep only files matching one of these globs (a pattern without ``/`` matches the file name)
    include: list[str] = []
    #: drop files matching one of these globs
    exclude: list[str] = []
    #: follow symbolic links (a folder reached twice through links is read once)
    follow_symlinks: bool = True
    #: read files and folders whose name starts with a dot
    hidden: bool = False
    #: cut long documents into chunks; without it a document is one record (PDF: one per page)
    chunk: ChunkConfig | None = None
    #: password for encrypted PDFs and Office files; write ``${env:PDF_PASSWORD}`` in YAML, never the secret
    password: SecretStr | None = None
    #: more passwords to try, in order, when files have different ones
    passwords: list[SecretStr] = []
    #: limits while unpacking zip/tar/gz/bz2/xz archives
    archives: ArchiveLimits = ArchiveLimits()

    _readers: dict[str, FileSource] = PrivateAttr(default_factory=dict)

    formats: ClassVar[tuple[str, ...]] = ()
    default_include: ClassVar[tuple[str, ...]] = ()

    # -- Source API ---------------------------------------------------------------------------

    def _includes(self) -> list[str]:
        if self.include:
            return list(self.include)
        return list(self.default_include)

    def partitions(self) -> list[Any]:
        """One partition per file (an archive is one partition; its members are read inside it)."""
        return discover(self.paths, self._includes(), list(self.exclude), self.follow_symlinks, self.hidden)

    def partition_fingerprint(self, partition: Any) -> str:
        """Size, mtime and SHA-256 of the file: unchanged files are cache hits."""
        try:
            return file_fingerprint(str(partition))
        except OSError:
            return "missing"

    def fingerprint(self) -> str:
        """Changes when any matched file is added, removed or changed."""
        h = hashlib.sha256()
        for p in self.partitions():
            h.update(f"{p}\0{self.partition_fingerprint(p)}\n".encode())
        return h.hexdigest()

    def location(self, partition: Any) -> str:
        return "" if partition is None else str(partition)

    def check(self, path: str) -> None:
        """The globs must match at least one file."""
        if not self.partitions():
            raise ConfigError(
                f"no file matches {self.paths}"
                + (f" with include {self._includes()}" if self._includes() else ""),
                path=f"{path}.paths",
                hint="check the paths (relative to the working directory) and the include/exclude patterns",
            )

    def read(self, partition: Any) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        path = Path(str(partition))
        blob = Blob(str(partition), path, path.name)
        kind = special_file_kind(path)
        if kind is not None:  # checked before anything opens it: reading a FIFO blocks
            yield Rejected(record_id(self._fmt_name(blob), blob.key), "not_regular_file", blob.key, kind)
            return
        yield from self.read_blob(blob)

    def files_read(self) -> list[str]:
        """The tokenizer file of ``chunk`` (``unit: tokens``): chunks change when it does."""
        if self.chunk is not None and self.chunk.tokenizer:
            return [str(_tokenizer_file(self.chunk.tokenizer))]
        return []

    # -- dispatch -----------------------------------------------------------------------------

    def read_blob(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Detect the format of ``blob`` and read it, unpacking archives; failures become Rejected."""
        if blob.name == "__encrypted__":
            yield Rejected(record_id("files", blob.key), "encrypted", blob.key, "encrypted archive member")
            return
        try:
            size = blob.size
            if size == 0:
                raise RecordError("empty_file", "0 bytes")
            fmt = detect_format(blob)
            if fmt in ARCHIVE_FORMATS:
                for member in iter_archive(blob, fmt, self.archives):
                    yield from self.read_blob(member)
                return
            if fmt == "encrypted_ooxml" and any(self.secrets()):
                yield from self._read_decrypted(blob)
                return
            reader = self.reader_for(fmt, blob)
            yield from reader.read_file(blob)
        except RecordError as e:
            yield Rejected(record_id(self._fmt_name(blob), blob.key), e.reason, blob.key, e.detail)
        except (MissingDependencyError, StepError):
            raise  # not this file's fault: a library to install, a broken resource
        except Exception as e:  # a parser's exception on one broken file: that file is quarantined
            yield Rejected(
                record_id(self._fmt_name(blob), blob.key),
                f"read_error:{type(e).__name__}",
                blob.key,
                str(e)[:2000],
            )

    def read_attached(
        self, blob: Blob, members: Iterable[tuple[str, bytes]]
    ) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Files embedded in ``blob`` (e-mail attachments), each read by its own format's reader
        with the id ``<blob>!<name>``, counted against the same limits as archive members."""
        budget = blob.budget or ArchiveBudget(self.archives)
        for name, payload in members:
            budget.add_member(blob.key)
            budget.add_bytes(len(payload), blob.key)
            tmp = copy_to_temp(payload, "".join(Path(name).suffixes[-2:])[:20])
            try:
                yield from self.read_blob(Blob(f"{blob.key}!{name}", tmp, name, blob.depth + 1, budget))
            finally:
                tmp.unlink(missing_ok=True)

    def _read_decrypted(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """An encrypted XLSX/DOCX/PPTX opened with the configured passwords, read by its own reader.

        Records keep the encrypted file's key; the plain package lives in a private temporary file
        (mode 0600) only while its reader runs.
        """
        plain = decrypt_office(blob, self.secrets())
        try:
            inner = Blob(blob.key, plain, blob.name, blob.depth, blob.budget)
            fmt = detect_format(inner)
            if fmt not in ("docx", "excel", "pptx"):
                raise RecordError("corrupt", f"the decrypted package is not an Office file (detected {fmt})")
            yield from self.reader_for(fmt, inner).read_file(inner)
        finally:
            plain.unlink(missing_ok=True)

    def _fmt_name(self, blob: Blob) -> str:
        return EXTENSIONS.get(blob.ext, "files")

    def reader_for(self, fmt: str, blob: Blob) -> FileSource:
        """The source that reads ``fmt``: this one, or the registered reader built with shared options."""
        if fmt in self.formats:
            return self
        if fmt == "encrypted_ooxml":
            raise RecordError(
                "encrypted",
                f"{blob.name} is an encrypted Office file (OLE2 EncryptedPackage); decrypt it first",
            )
        if fmt == "mismatch":
            raise RecordError(
                "corrupt",
                f"named .{blob.ext} but the content is not a {blob.ext.upper()} file: {blob.head(16)!r}",
            )
        if fmt == "broken_zip":
            raise RecordError(
                "truncated" if blob.size > 22 else "corrupt", f"ZIP container unreadable (.{blob.ext})"
            )
        if fmt in ("binary", "unknown", "ole", "unsupported_zip"):
            raise RecordError(
                "unsupported_format", f"no reader for this content (.{blob.ext}, detected {fmt})"
            )
        return self.make_reader(fmt)

    def make_reader(self, fmt: str) -> FileSource:
        """A reader for ``fmt`` that inherits this source's shared options (cached per process)."""
        cache = self._readers
        if fmt not in cache:
            from genloom.core.registry import SOURCES

            cls = SOURCES.get(fmt)
            cache[fmt] = cls(**self.reader_options(fmt, cls))
        return cache[fmt]

    def reader_options(self, fmt: str, cls: Any) -> dict[str, Any]:
        """Options for the reader of ``fmt``: the fields both sources share."""
        fields = getattr(cls, "model_fields", {})
        shared = {
            k: getattr(self, k)
            for k in type(self).model_fields
            if k in fields and k not in ("type", "include")
        }
        return {**shared, "type": fmt}

    def secrets(self) -> list[str]:
        """The configured passwords, in the order they are tried."""
        out = [self.password.get_secret_value()] if self.password is not None else []
        return out + [p.get_secret_value() for p in self.passwords]

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Read one file of this source's format (written by each format)."""
        raise NotImplementedError

    # -- helpers for readers ------------------------------------------------------------------

    def record(self, key: str, text: str, meta: dict[str, Any], damaged: bool = False) -> dict[str, Any]:
        """One record of this source's format: stable id from the key, format as ``source``.

        NULs are removed from the text and from string meta values, counted in
        ``meta.nul_removed``. ``damaged`` says the file had invalid bytes (now U+FFFD): the
        U+FFFD of this text are counted in ``meta.invalid_bytes``.
        """
        text, nuls = strip_nul(text)
        if nuls or any(isinstance(v, (str, list)) and "\x00" in str(v) for v in meta.values()):
            meta = dict(meta)
            for k, v in meta.items():
                if isinstance(v, str):
                    meta[k], n = strip_nul(v)
                    nuls += n
                elif isinstance(v, list):
                    cleaned = [strip_nul(x) if isinstance(x, str) else (x, 0) for x in v]
                    meta[k] = [x for x, _ in cleaned]
                    nuls += sum(n for _, n in cleaned)
            meta["nul_removed"] = nuls
        if damaged and (invalid := text.count("\ufffd")):
            meta = {**meta, "invalid_bytes": invalid}
        return {"id": record_id(self.type, key), "text": text, "source": self.type, "meta": meta}

    def emit_document(
        self,
        blob: Blob,
        blocks: Iterable[Block],
        meta: dict[str, Any],
        per_page: bool = False,
        damaged: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Records for a document: chunks when ``chunk`` is set, else one per document (or per page).

        An empty document raises RecordError ``no_text``; ``damaged`` as in :meth:`record`.
        """
        base = {"path": blob.key, "format": self.type, **meta}
        n = 0
        if self.chunk is not None:
            for text, cmeta in chunk_blocks(blocks, self.chunk):
                n += 1
                yield self.record(
                    f"{blob.key}#chunk={cmeta['chunk']}",
                    text,
                    {**base, **cmeta, "doc_id": record_id(self.type, blob.key)},
                    damaged,
                )
        elif per_page:
            page_blocks: list[Block] = []
            current: int | None = None
            for b in blocks:
                if page_blocks and b.page != current:
                    n += 1
                    yield self._page_record(blob, page_blocks, base, damaged)
                    page_blocks = []
                current = b.page
                page_blocks.append(b)
            if page_blocks:
                n += 1
                yield self._page_record(blob, page_blocks, base, damaged)
        else:
            kept = [b for b in blocks if not is_blank(b.text)]
            texts = [b.text.strip("\n").rstrip() for b in kept]
            for b in kept:
                if b.meta:
                    base.update(b.meta)
            if texts:
                n += 1
                yield self.record(blob.key, "\n\n".join(texts), base, damaged)
        if n == 0:
            raise RecordError("no_text", "the document holds no text")

    def _page_record(
        self, blob: Blob, blocks: list[Block], base: dict[str, Any], damaged: bool = False
    ) -> dict[str, Any]:
        page = blocks[0].page
        text = "\n\n".join(b.text.strip("\n").rstrip() for b in blocks if not is_blank(b.text))
        meta = {**base, "page": page}
        for b in blocks:
            if b.meta:
                meta.update(b.meta)
        if blocks[0].section:
            meta["section"] = list(blocks[0].section)
        return self.record(f"{blob.key}#page={page}", text, meta, damaged)


def copy_to_temp(data: bytes, suffix: str) -> Path:
    """Write bytes to a temporary file (the caller deletes it)."""
    fd, name = tempfile.mkstemp(prefix="genloom-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


def decrypt_office(blob: Blob, passwords: list[str]) -> Path:
    """Decrypt an OOXML file in an OLE2 ``EncryptedPackage`` (Agile or Standard encryption) with
    the first password that opens it; the plain package is written to a temporary file (the caller
    deletes it).

    RecordError ``wrong_password`` when none opens it, ``encrypted`` when the encryption is not
    password-based (IRM/DRM) or not supported, ``missing_dependency`` without msoffcrypto-tool.
    """
    try:
        import msoffcrypto
        from msoffcrypto.exceptions import DecryptionError, FileFormatError, InvalidKeyError, ParseError
    except ImportError as e:
        raise RecordError(
            "missing_dependency",
            "msoffcrypto-tool decrypts password-protected Office files: pip install 'genloom[docs]'",
        ) from e
    data = blob.read_bytes()
    passwords = [p for p in passwords if p]  # Office has no empty password (PDF has)
    for password in passwords:
        try:
            office = msoffcrypto.OfficeFile(io.BytesIO(data))
            office.load_key(password=password, verify_password=True)
            out = io.BytesIO()
            office.decrypt(out)
        except InvalidKeyError:
            continue
        except (DecryptionError, FileFormatError, ParseError, KeyError, ValueError) as e:
            raise RecordError(
                "encrypted", f"encrypted Office file that cannot be decrypted: {type(e).__name__}: {e}"
            ) from e
        return copy_to_temp(out.getvalue(), Path(blob.name).suffix[:20])
    raise RecordError(
        "wrong_password",
        f"none of the {len(passwords)} configured passwords opens this encrypted Office file",
    )


def which(*tools: str) -> str | None:
    """The first of ``tools`` found on PATH."""
    for t in tools:
        if shutil.which(t):
            return t
    return None


def is_regular_file(path: Path) -> bool:
    """True for a regular file (not a FIFO or device, which would block a reader)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _special_kind(mode: int) -> str | None:
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def special_file_kind(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``named pipe``,
    ``socket``, ``character device``, ``block device``); None otherwise or when it is missing.
    Symbolic links are followed; nothing is opened."""
    try:
        return _special_kind(path.stat().st_mode)
    except OSError:
        return None


__all__ = [
    "ArchiveLimits",
    "Blob",
    "Block",
    "ChunkConfig",
    "FileSource",
    "chunk_blocks",
    "clean_text",
    "Decoded",
    "DecodedStream",
    "decode_as",
    "decode_bytes",
    "detect_format",
    "discover",
    "file_fingerprint",
    "markdown_table",
    "sniff_encoding",
    "special_file_kind",
    "strip_nul",
    "wide_unicode",
]
