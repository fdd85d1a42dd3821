"""One file to read (on disk, or extracted from an archive), and what unpacking may still use."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from genloom.core.errors import RecordError


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


def copy_to_temp(data: bytes, suffix: str) -> Path:
    """Write bytes to a temporary file (the caller deletes it)."""
    fd, name = tempfile.mkstemp(prefix="genloom-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)
