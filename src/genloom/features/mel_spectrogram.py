"""Log-power mel spectrograms of audio, by librosa."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._audio import AudioFeature, summary, summary_parts
from genloom.features._media import PartKind


@FEATURES.register("mel_spectrogram")
class MelSpectrogramFeature(AudioFeature):
    """Mel spectrogram of each audio file (``librosa.feature.melspectrogram``: power STFT through
    ``n_mels`` triangular mel filters between ``fmin`` and ``fmax``), in dB relative to 1.0
    (``power_to_db``, floored at -``top_db`` below the file's peak).

    Adds ``<output>_mean`` and ``<output>_std`` (per band over the frames, dB,
    ``fixed_size_list<float32>[n_mels]``) and ``<output>_frames``; with ``frames: true`` also
    ``<output>``, the whole spectrogram time-major (one ``[n_mels]`` vector per frame).
    """

    type: Literal["mel_spectrogram"] = "mel_spectrogram"
    n_mels: int = Field(default=64, ge=8, le=512, description="mel bands")
    fmin: float = Field(default=0.0, ge=0, description="lowest frequency of the filters (Hz)")
    fmax: float | None = Field(
        default=None, gt=0, description="highest frequency (Hz); default: half the sample rate"
    )
    top_db: float = Field(default=80.0, gt=0, description="dynamic range kept below the peak (dB)")
    frames: bool = Field(default=False, description="also write the per-frame spectrogram as <output>")

    def parts(self) -> dict[str, PartKind]:
        return summary_parts(self.n_mels, self.frames)

    def features(self, y: np.ndarray, sr: int) -> dict[str, Any]:
        import librosa

        power = librosa.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
        )  # (n_mels, T)
        db = librosa.power_to_db(power, ref=1.0, top_db=self.top_db)
        out = summary(db)
        if self.frames:
            out[""] = db.T
        return out
