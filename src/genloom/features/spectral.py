"""Spectral statistics of audio: centroid, bandwidth, roll-off, flatness, zero-crossing rate, peak."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from genloom.core.registry import FEATURES
from genloom.features._audio import AudioFeature
from genloom.features._media import PartKind


@FEATURES.register("spectral")
class SpectralFeature(AudioFeature):
    """Spectral shape of each audio file, from one magnitude STFT (librosa), as float32 scalars.

    ``<output>_centroid`` (Hz: the magnitude-weighted mean frequency), ``<output>_bandwidth``
    (Hz: the weighted standard deviation around it), ``<output>_rolloff`` (Hz: the frequency
    below which ``rolloff_percent`` of the energy lies), ``<output>_flatness`` (geometric over
    arithmetic mean of the power, 0 for a pure tone, 1 for white noise), ``<output>_zcr`` (the
    fraction of consecutive samples that change sign), ``<output>_rms`` (root mean square
    amplitude): each the mean over frames. ``<output>_peak_hz``: the centre frequency of the
    strongest bin of the time-averaged magnitude spectrum, the 0 Hz bin (a DC offset) left out (a
    resolution of sample_rate / n_fft: 10.8 Hz with the defaults).
    """

    type: Literal["spectral"] = "spectral"
    rolloff_percent: float = Field(
        default=0.85, gt=0, lt=1, description="the energy fraction of the roll-off"
    )

    def parts(self) -> dict[str, PartKind]:
        return {
            p: ("float",) for p in ("centroid", "bandwidth", "rolloff", "flatness", "zcr", "rms", "peak_hz")
        }

    def features(self, y: np.ndarray, sr: int) -> dict[str, Any]:
        import librosa

        magnitude = np.abs(librosa.stft(y, n_fft=self.n_fft, hop_length=self.hop_length))  # (1 + n_fft/2, T)
        freqs = librosa.fft_frequencies(sr=sr, n_fft=self.n_fft)
        feature = librosa.feature
        return {
            "centroid": feature.spectral_centroid(S=magnitude, sr=sr, freq=freqs).mean(),
            "bandwidth": feature.spectral_bandwidth(S=magnitude, sr=sr, freq=freqs).mean(),
            "rolloff": feature.spectral_rolloff(
                S=magnitude, sr=sr, freq=freqs, roll_percent=self.rolloff_percent
            ).mean(),
            "flatness": feature.spectral_flatness(S=magnitude).mean(),
            "zcr": feature.zero_crossing_rate(y, frame_length=self.n_fft, hop_length=self.hop_length).mean(),
            "rms": feature.rms(S=magnitude, frame_length=self.n_fft, hop_length=self.hop_length).mean(),
            "peak_hz": freqs[1 + int(np.argmax(magnitude[1:].mean(axis=1)))],  # DC (an offset) left out
        }
