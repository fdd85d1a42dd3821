"""What the audio feature steps share: decoding the ``audio`` column to a mono signal.

An audio step reads a binary column of encoded files (WAV, FLAC, OGG: whatever libsndfile reads,
through soundfile), mixes the channels down to mono, resamples to the step's ``sample_rate``
(librosa, soxr) so features of files recorded at different rates compare, zero-pads a signal shorter than one
FFT window (``n_fft``) to one, and adds columns as
the image steps do (``features/_image.py``). A null payload gives nulls; bytes that do not decode
are quarantined as ``bad_audio``, a file without samples as ``empty_audio``.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.steps import Map, StepContext
from genloom.features._media import PartKind, add_parts, run_per_row

#: pitch classes, in librosa's chroma order (C first)
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def decode_audio(
    data: bytes, sample_rate: int | None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Encoded audio bytes to (mono float32 samples, sample rate), resampled to ``sample_rate``."""
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise RecordError("bad_audio", f"{type(e).__name__}: {e}"[:500]) from e
    if samples.shape[0] == 0:
        raise RecordError("empty_audio", "the file holds no samples")
    y = samples.mean(axis=1)  # (T,): channels mixed down
    if max_seconds is not None:
        y = y[: int(max_seconds * rate)]
    if sample_rate is not None and sample_rate != rate:
        import librosa

        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(y, dtype=np.float32), int(rate)


def frames_part(dim: int) -> PartKind:
    """The kind of a time-major matrix part: list<fixed_size_list<float32>[dim]>."""
    return ("frames", dim)


class AudioFeature(Map):
    """Base of the audio feature steps: ``features(y, sr)`` per decoded signal, columns by ``parts()``."""

    column: str = Field(default="audio", description="the binary column holding encoded audio files")
    output: str | None = Field(
        default=None, description="name (prefix) of the output columns; default: the step's type"
    )
    sample_rate: int | None = Field(
        default=22050,
        ge=1000,
        le=384000,
        description="resample every signal to this rate (Hz); null: keep each file's",
    )
    max_seconds: float | None = Field(
        default=None, gt=0, description="use at most this many seconds from the start"
    )
    n_fft: int = Field(default=2048, ge=64, le=65536, description="FFT window length in samples")
    hop_length: int = Field(default=512, ge=1, le=65536, description="samples between two frames")

    requires: ClassVar[tuple[str, ...]] = ("soundfile", "librosa")
    extra: ClassVar[str] = "audio"

    @property
    def out(self) -> str:
        """The output column name (prefix)."""
        return self.output or self.type

    def parts(self) -> dict[str, PartKind]:
        """Output parts and their kinds (``""`` names the column ``<output>`` itself)."""
        raise NotImplementedError

    def features(self, y: np.ndarray, sr: int) -> dict[str, Any]:
        """The features of one mono signal ``y`` (T,) at ``sr`` Hz, one value per part."""
        raise NotImplementedError

    def setup(self) -> None:
        import librosa.feature  # noqa: F401  (librosa's lazy modules load once per process, here)

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        """Decode each file, compute its features, add the columns."""

        def compute(data: bytes) -> dict[str, Any]:
            y, sr = decode_audio(data, self.sample_rate, self.max_seconds)
            if len(y) < self.n_fft:  # shorter than one FFT window: zero-padded to one
                y = np.pad(y, (0, self.n_fft - len(y)))
            return self.features(y, sr)

        kept, rows = run_per_row(self, table, ctx, self.column, compute)
        return add_parts(kept, self.out, self.parts(), rows)


def summary(matrix: np.ndarray) -> dict[str, Any]:
    """mean, std (per row, over time) and the frame count of a (D, T) feature matrix."""
    return {"mean": matrix.mean(axis=1), "std": matrix.std(axis=1), "frames": matrix.shape[1]}


def summary_parts(dim: int, keep_frames: bool) -> dict[str, PartKind]:
    """The parts of a matrix feature: mean, std, frames, and the matrix itself when kept."""
    kinds: dict[str, PartKind] = {"mean": ("vector", dim), "std": ("vector", dim), "frames": ("int",)}
    if keep_frames:
        kinds[""] = frames_part(dim)
    return kinds
