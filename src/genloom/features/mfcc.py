"""Mel-frequency cepstral coefficients (MFCC) of audio, by librosa."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._audio import AudioFeature, summary, summary_parts
from genloom.features._media import PartKind


@FEATURES.register("mfcc")
class MfccFeature(AudioFeature):
    """MFCCs of each audio file (Davis and Mermelstein 1980; ``librosa.feature.mfcc``: a mel power
    spectrogram of ``n_mels`` bands in dB, then a type-II orthonormal DCT, ``n_mfcc`` coefficients).

    Adds ``<output>_mean`` and ``<output>_std`` (per coefficient over the frames,
    ``fixed_size_list<float32>[n_mfcc]``) and ``<output>_frames`` (int32); with ``frames: true``
    also ``<output>``, the whole matrix time-major (one ``[n_mfcc]`` vector per frame; librosa's
    (n_mfcc, T) transposed). T is ``1 + samples // hop_length`` (frames are centred): 44 for one
    second at 22050 Hz with the default hop of 512.
    """

    type: Literal["mfcc"] = "mfcc"
    n_mfcc: int = Field(default=13, ge=1, le=128, description="coefficients per frame")
    n_mels: int = Field(default=128, ge=8, le=512, description="mel bands before the DCT")
    frames: bool = Field(default=False, description="also write the per-frame matrix as <output>")

    def parts(self) -> dict[str, PartKind]:
        return summary_parts(self.n_mfcc, self.frames)

    def features(self, y: np.ndarray, sr: int) -> dict[str, Any]:
        import librosa

        m = librosa.feature.mfcc(
            y=y, sr=sr, n_mfcc=self.n_mfcc, n_mels=self.n_mels, n_fft=self.n_fft, hop_length=self.hop_length
        )  # (n_mfcc, T)
        out = summary(m)
        if self.frames:
            out[""] = m.T
        return out
