"""Archives (zip, tar, gz, bz2, xz): what they are, and their members extracted under limits.

Members are extracted one at a time into temporary files, counted against one
:class:`~genloom.sources._files.blob.ArchiveBudget` shared by nested archives (total uncompressed
bytes, compression ratio, member count, nesting depth), so a zip bomb is quarantined as
``zip_bomb`` and never unpacked.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from genloom.core.errors import RecordError
from genloom.sources._files.blob import ArchiveBudget, ArchiveLimits, Blob

#: the archive kinds, opened transparently by every file source
ARCHIVE_FORMATS = ("zip", "tar", "gz", "bz2", "xz")
#: extension -> archive kind, used when the content does not decide
ARCHIVE_EXTENSIONS = {"zip": "zip", "tar": "tar", "tgz": "tar", "gz": "gz", "bz2": "bz2", "xz": "xz"}
#: the name of the blob standing for a member that the archive encrypts (quarantined as ``encrypted``)
ENCRYPTED_MEMBER = "__encrypted__"
#: how a ZIP file starts (a local file header, or the end record of an empty archive)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

_COMPRESSED: tuple[tuple[bytes, str, Any], ...] = (
    (b"\x1f\x8b", "gz", gzip.open),
    (b"BZh", "bz2", bz2.open),
    (b"\xfd7zXZ\x00", "xz", lzma.open),
)


def compressed_kind(head: bytes, path: Path) -> str | None:
    """``gz``, ``bz2`` or ``xz`` from the magic bytes, ``tar`` when the stream inside is a tar
    archive, else None (ZIP is a container: see :mod:`~genloom.sources._files.detect`)."""
    for magic, kind, opener in _COMPRESSED:
        if head.startswith(magic):
            return "tar" if _is_tar_stream(path, opener) else kind
    return None


def is_tar_header(head: bytes) -> bool:
    """Whether ``head`` starts with a POSIX tar header (``ustar`` at offset 257)."""
    return len(head) > 262 and head[257:262] == b"ustar"


def _is_tar_stream(path: Path, opener: Any) -> bool:
    try:
        with opener(path, "rb") as f:
            block = f.read(512)
        return len(block) == 512 and block[257:262] == b"ustar"
    except (OSError, EOFError, lzma.LZMAError):
        return False


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
    return Blob(f"{blob.key}!{member}", Path(os.devnull), ENCRYPTED_MEMBER, blob.depth + 1, blob.budget)


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
