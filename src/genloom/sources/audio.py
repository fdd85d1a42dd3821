"""Audio files (WAV, FLAC, OGG...) as records: one per file, the encoded bytes kept whole."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from genloom.core.errors import ConfigError, MissingDependencyError, RecordError, StepError
from genloom.core.records import Rejected, dump_meta, record_id
from genloom.core.registry import SOURCES
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob

AUDIO_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),
        ("audio", pa.binary()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_s", pa.float64()),
        ("label", pa.string()),
    ]
)


@SOURCES.register("audio")
class AudioSource(FileSource):
    """Audio files, one record per file, read through libsndfile (soundfile): WAV, FLAC, OGG
    (Vorbis and Opus), AIFF and the other formats it knows.

    A record holds the file's encoded bytes in ``audio`` (binary, unchanged: the feature steps
    decode them), ``sample_rate`` and ``channels`` (int32), ``duration_s`` (float64) and
    ``label``: the name of the file's folder with ``label_from: folder``, or the first group
    (or the group named ``label``) of ``label_pattern`` searched in the file's name with
    ``label_from: pattern`` (``^(\\d+)_`` gives ``7`` for ``7_jackson_0.wav``); null when the
    pattern does not match or without ``label_from``. ``text`` describes the file
    (``name: 0.43 s, 8000 Hz, 1 channel``); ``meta`` has the path, libsndfile's format and
    subtype (``WAV``, ``PCM_16``) and the frame count. The id is ``audio:<path>``.

    Every file is decoded once while it is read, so one that libsndfile cannot decode to the end
    is quarantined as ``unreadable_audio`` (with libsndfile's message), one without samples as
    ``empty_audio``, one larger than ``max_mb`` as ``too_large``.
    """

    type: Literal["audio"] = "audio"
    label_from: Literal["folder", "pattern"] | None = Field(
        default=None, description="where the label comes from: the file's folder name, or label_pattern"
    )
    label_pattern: str | None = Field(
        default=None,
        description="regular expression searched in the file name; its first group (or group 'label') is the label",
    )
    max_mb: float = Field(default=256.0, gt=0, description="larger files are quarantined as too_large")

    formats: ClassVar[tuple[str, ...]] = ("audio",)
    # what the ``files`` source hands to this reader: FLAC and Ogg by their signatures (WAV's and
    # AIFF's RIFF / FORM containers are shared with WebP, AVI and IFF, so ``files`` leaves them to
    # this source's own ``paths``)
    magic: ClassVar[tuple[bytes, ...]] = (b"fLaC", b"OggS")
    default_include: ClassVar[tuple[str, ...]] = (
        "*.wav",
        "*.wave",
        "*.flac",
        "*.ogg",
        "*.oga",
        "*.opus",
        "*.aif",
        "*.aiff",
    )
    requires: ClassVar[tuple[str, ...]] = ("soundfile",)
    extra: ClassVar[str] = "audio"

    def check(self, path: str) -> None:
        super().check(path)
        if self.label_from == "pattern":
            if not self.label_pattern:
                raise ConfigError("label_from: pattern needs label_pattern", path=f"{path}.label_pattern")
            try:
                rx = re.compile(self.label_pattern)
            except re.error as e:
                raise ConfigError(f"not a regular expression: {e}", path=f"{path}.label_pattern") from e
            if rx.groups == 0:
                raise ConfigError(
                    "label_pattern needs a group: the part that is the label",
                    path=f"{path}.label_pattern",
                    hint=r"^(\d+)_ for 7_jackson_0.wav",
                )

    def read_blob(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Read one file; one that cannot be read is quarantined (no format detection: every
        matched file is offered to libsndfile)."""
        try:
            if blob.size == 0:
                raise RecordError("empty_file", "0 bytes")
            yield from self.read_file(blob)
        except RecordError as e:
            yield Rejected(record_id(self.type, blob.key), e.reason, blob.key, e.detail)
        except (MissingDependencyError, StepError):
            raise
        except Exception as e:  # a reader's exception on one broken file: that file is quarantined
            yield Rejected(
                record_id(self.type, blob.key), f"read_error:{type(e).__name__}", blob.key, str(e)[:2000]
            )

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        import soundfile as sf

        data = blob.read_bytes(limit=int(self.max_mb * 2**20))
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                info = (f.samplerate, f.channels, f.format, f.subtype)
                frames = 0
                for block in f.blocks(blocksize=65536, dtype="float32", always_2d=True):
                    frames += block.shape[0]  # decoded to the end: a truncated file fails here
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            raise RecordError("unreadable_audio", f"{type(e).__name__}: {e}"[:500]) from e
        rate, channels, fmt, subtype = info
        if frames == 0:
            raise RecordError("empty_audio", "the file holds no samples")
        duration = frames / rate
        name = PurePosixPath(blob.key.replace("\\", "/")).name
        plural = "s" if channels != 1 else ""
        row = {
            "id": record_id(self.type, blob.key),
            "text": f"{name}: {duration:.2f} s, {rate} Hz, {channels} channel{plural}",
            "source": self.type,
            "meta": dump_meta({"format": fmt, "frames": frames, "path": blob.key, "subtype": subtype}),
            "audio": data,
            "sample_rate": rate,
            "channels": channels,
            "duration_s": duration,
            "label": self.label(blob.key),
        }
        yield pa.Table.from_pylist([row], schema=AUDIO_SCHEMA)

    def label(self, key: str) -> str | None:
        """The label of the file at ``key`` (None: no label)."""
        path = PurePosixPath(key.replace("\\", "/").split("!")[-1])
        if self.label_from == "folder":
            return path.parent.name or None
        if self.label_from == "pattern" and self.label_pattern:
            m = re.search(self.label_pattern, path.name)
            if m is None:
                return None
            return m.group("label") if "label" in m.re.groupindex else m.group(1)
        return None
