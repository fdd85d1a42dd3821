"""Audio features (MFCC, mel spectrogram, chroma, spectral statistics) on generated tones with
known answers, and on the spoken digits through the audio source and the pipeline.

librosa's modules take seconds to load (numba), once per process: the tests share one module
of steps and few calls."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genloom.core.steps import StepContext
from genloom.features.chroma import ChromaFeature
from genloom.features.mel_spectrogram import MelSpectrogramFeature
from genloom.features.mfcc import MfccFeature
from genloom.features.spectral import SpectralFeature
from genloom.pipeline import Pipeline

sf = pytest.importorskip("soundfile", reason="the audio extra is not installed")
librosa = pytest.importorskip("librosa", reason="the audio extra is not installed")

SR = 22050


def encoded(y: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, rate, format=fmt)
    return buf.getvalue()


def sine(hz: float, seconds: float = 1.0, rate: int = SR) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def clips(*payloads: bytes | None) -> pa.Table:
    return pa.table({"id": [f"c{i}" for i in range(len(payloads))], "audio": pa.array(payloads, pa.binary())})


def test_mfcc_of_a_one_second_tone_has_librosas_shape_and_values() -> None:
    data = encoded(sine(440), SR)
    out = MfccFeature(frames=True).run(clips(data), StepContext()).to_pylist()[0]
    y, _ = sf.read(io.BytesIO(data), dtype="float32")  # the 16-bit samples the file holds
    want = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=13)  # (13, 44)
    assert want.shape == (13, 44)
    got = np.array(out["mfcc"])
    assert got.shape == (44, 13) and out["mfcc_frames"] == 44  # 1 + 22050 // 512 frames, time-major
    assert got == pytest.approx(want.T, abs=1e-3)
    assert np.array(out["mfcc_mean"]) == pytest.approx(want.mean(axis=1), abs=1e-3)
    assert np.array(out["mfcc_std"]) == pytest.approx(want.std(axis=1), abs=1e-3)


def test_spectral_peak_chroma_and_flatness_of_tones_and_noise() -> None:
    bin_hz = SR / 2048
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, SR).astype(np.float32)
    stereo_8k = np.stack([sine(440, rate=8000), sine(440, rate=8000)], axis=1)
    table = clips(
        encoded(sine(440), SR), encoded(sine(880), SR, "FLAC"), encoded(noise, SR), encoded(stereo_8k, 8000)
    )
    spectral = SpectralFeature().run(table, StepContext()).to_pylist()
    tone, octave, white, resampled = spectral
    assert abs(tone["spectral_peak_hz"] - 440) <= bin_hz
    assert abs(octave["spectral_peak_hz"] - 880) <= bin_hz
    assert abs(resampled["spectral_peak_hz"] - 440) <= bin_hz  # 8 kHz stereo, mixed and resampled
    assert tone["spectral_centroid"] == pytest.approx(440, rel=0.05)
    assert octave["spectral_centroid"] == pytest.approx(880, rel=0.05)
    assert tone["spectral_flatness"] < 0.01 < 0.3 < white["spectral_flatness"]
    assert tone["spectral_zcr"] == pytest.approx(2 * 440 / SR, rel=0.05)  # two sign changes a cycle
    assert white["spectral_zcr"] > 10 * tone["spectral_zcr"]
    assert white["spectral_rolloff"] > 5 * tone["spectral_rolloff"]
    chroma = ChromaFeature().run(table, StepContext())
    assert chroma.column("chroma_pitch").to_pylist()[:2] == ["A", "A"]  # A4 and A5
    assert chroma.schema.field("chroma_mean").type == pa.list_(pa.float32(), 12)
    mel = MelSpectrogramFeature(n_mels=32).run(table, StepContext()).to_pylist()
    peak_band = int(np.argmax(mel[0]["mel_spectrogram_mean"]))
    bands = librosa.mel_frequencies(n_mels=34, fmax=SR / 2)  # band k is centred on bands[k + 1]
    assert bands[peak_band] < 440 < bands[peak_band + 2]


def test_null_audio_gives_nulls_and_bad_bytes_are_quarantined() -> None:
    table = clips(encoded(sine(440, 0.05), SR), None, b"RIFF....not audio")
    ctx = StepContext()
    out = MfccFeature().run(table, ctx)
    assert out.column("id").to_pylist() == ["c0", "c1"]
    assert out.column("mfcc_mean")[1].as_py() is None
    assert [(r["id"], r["reason"]) for r in ctx.rejected] == [("c2", "bad_audio")]
    assert (
        out.column("mfcc_frames")[0].as_py() == 5
    )  # 50 ms padded to one 2048-sample window: 1 + 2048 // 512


def test_spoken_digits_through_the_audio_source_and_the_pipeline(tmp_path: Path) -> None:
    """../shared/data/audio (spoken digits, 8 kHz): genloom's audio source, the features stage,
    and MFCCs that put recordings of one digit closer together than recordings of different ones."""
    from tests.conftest import SHARED_DATA

    audio = SHARED_DATA / "audio"
    if not audio.is_dir():
        pytest.skip("../shared/data/audio is absent")
    raw = {
        "name": "digits",
        "sources": [
            {"type": "audio", "paths": [str(audio)], "label_from": "pattern", "label_pattern": r"^(\d)_"}
        ],
        "features": [{"type": "mfcc", "sample_rate": None}, {"type": "spectral", "sample_rate": None}],
    }
    pipeline = Pipeline.from_dict(raw, base_dir=tmp_path)
    summary = pipeline.run()
    (stage,) = [s for s in summary.stages if s.stage == "features"]
    table = pa.concat_tables(list(pipeline.store.iter_artifact("features", stage.key)))
    n = len(list(audio.glob("*.wav")))
    assert table.num_rows == n and stage.rows == n
    rows = table.to_pylist()
    for r in rows:
        samples = round(r["duration_s"] * r["sample_rate"])
        assert r["mfcc_frames"] == 1 + max(samples, 2048) // 512
        assert 80 < r["spectral_peak_hz"] < 2000  # voices
    x = np.hstack([np.array([r["mfcc_mean"] for r in rows]), np.array([r["mfcc_std"] for r in rows])])
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    labels = np.array([r["label"] for r in rows])
    d = ((x[:, None] - x[None]) ** 2).sum(axis=-1)
    same = (labels[:, None] == labels[None]) & ~np.eye(n, dtype=bool)
    # 41.7 against 54.3 when written (4 speakers, 10 digits)
    assert d[same].mean() < 0.9 * d[labels[:, None] != labels[None]].mean()


def _run_in_worker(job: tuple[list[object], pa.Table]) -> pa.Table:
    steps, table = job
    for step in steps:
        table = step.run(table, StepContext())  # type: ignore[attr-defined]
    return table


def test_four_shards_in_a_process_pool_equal_one_process() -> None:
    """The audio steps pickled to two worker processes, on four shards of tones at different
    rates, give the columns one process gives on them all, bit for bit."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    table = clips(
        *[
            encoded(sine(110 * (k + 1), 0.2, rate), rate)
            for k, rate in enumerate([8000, 16000, 22050, 44100] * 2)
        ]
    )
    steps = [MfccFeature(), MelSpectrogramFeature(n_mels=16), ChromaFeature(), SpectralFeature()]
    shards = [table.slice(i * 2, 2) for i in range(4)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        pooled = pa.concat_tables(pool.map(_run_in_worker, [(steps, s) for s in shards]))
    assert pooled.equals(_run_in_worker((steps, table)))
