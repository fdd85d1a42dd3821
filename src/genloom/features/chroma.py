"""Chroma (pitch class) features of audio, by librosa."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._audio import PITCH_CLASSES, AudioFeature, summary, summary_parts
from genloom.features._media import PartKind


@FEATURES.register("chroma")
class ChromaFeature(AudioFeature):
    """Chromagram of each audio file (``librosa.feature.chroma_stft``: the STFT's energy folded
    into the 12 pitch classes of equal temperament, A4 = ``tuning`` offset from 440 Hz; each frame
    scaled to a maximum of 1).

    Adds ``<output>_mean`` and ``<output>_std`` (per pitch class C, C#, ... B over the frames,
    ``fixed_size_list<float32>[12]``), ``<output>_frames``, and ``<output>_pitch``: the pitch
    class with the most mean energy, as a string (a categorical column usable as a control; a
    440 Hz tone gives ``A``); with ``frames: true`` also the per-frame chromagram as ``<output>``.
    """

    type: Literal["chroma"] = "chroma"
    tuning: float | None = Field(
        default=0.0,
        ge=-0.5,
        le=0.5,
        description="deviation from A440 in fractions of a bin; null: estimated per file",
    )
    frames: bool = Field(default=False, description="also write the per-frame chromagram as <output>")

    def parts(self) -> dict[str, PartKind]:
        return {**summary_parts(12, self.frames), "pitch": ("string",)}

    def features(self, y: np.ndarray, sr: int) -> dict[str, Any]:
        import librosa

        c = librosa.feature.chroma_stft(
            y=y, sr=sr, n_fft=self.n_fft, hop_length=self.hop_length, tuning=self.tuning
        )  # (12, T)
        out = summary(c)
        out["pitch"] = PITCH_CLASSES[int(np.argmax(out["mean"]))]
        if self.frames:
            out[""] = c.T
        return out
