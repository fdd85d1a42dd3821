"""The audio source: WAV, FLAC and OGG files written by soundfile in the test, labels from
folders and file names, broken files quarantined, and the real spoken digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genloom.core.errors import ConfigError
from genloom.core.steps import StepContext
from genloom.sources.audio import AudioSource

sf = pytest.importorskip("soundfile", reason="the audio extra is not installed")


def tone(path: Path, hz: float, seconds: float, rate: int, channels: int = 1, **kw: str) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    y = 0.5 * np.sin(2 * np.pi * hz * t)
    y = np.stack([y] * channels, axis=1) if channels > 1 else y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, rate, **kw)
    return y


def read(source: AudioSource) -> tuple[pa.Table, StepContext]:
    ctx = StepContext()
    tables = [t for p in source.partitions() for t in source.run_partition(p, ctx)]
    return pa.concat_tables(tables).sort_by("id"), ctx


def test_wav_flac_ogg_with_folder_labels_and_broken_files_quarantined(tmp_path: Path) -> None:
    tone(tmp_path / "dog" / "bark.wav", 440, 0.5, 16000, channels=2, subtype="PCM_16")
    tone(tmp_path / "dog" / "growl.flac", 220, 1.0, 8000)
    tone(tmp_path / "cat" / "meow.ogg", 880, 0.25, 22050, format="OGG", subtype="VORBIS")
    (tmp_path / "cat" / "noise.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)))
    (tmp_path / "cat" / "empty.flac").write_bytes(b"")
    src = AudioSource(paths=[str(tmp_path)], label_from="folder")
    src.check("sources.0")
    table, ctx = read(src)
    rows = {Path(r["id"]).name: r for r in table.to_pylist()}
    assert sorted(rows) == ["bark.wav", "growl.flac", "meow.ogg"]
    bark, growl, meow = rows["bark.wav"], rows["growl.flac"], rows["meow.ogg"]
    assert (bark["sample_rate"], bark["channels"], bark["label"]) == (16000, 2, "dog")
    assert bark["duration_s"] == pytest.approx(0.5)
    assert (growl["sample_rate"], growl["channels"], growl["duration_s"]) == (8000, 1, pytest.approx(1.0))
    assert (meow["sample_rate"], meow["label"]) == (22050, "cat")
    assert meow["duration_s"] == pytest.approx(0.25, abs=0.01)
    assert bark["audio"] == (tmp_path / "dog" / "bark.wav").read_bytes()  # the file's bytes, unchanged
    assert json.loads(growl["meta"])["format"] == "FLAC" and json.loads(bark["meta"])["subtype"] == "PCM_16"
    assert bark["text"] == "bark.wav: 0.50 s, 16000 Hz, 2 channels"
    assert table.schema.field("audio").type == pa.binary()
    assert table.schema.field("sample_rate").type == pa.int32()
    reasons = {Path(r["location"]).name: r["reason"] for r in ctx.rejected}
    assert reasons == {"noise.wav": "unreadable_audio", "empty.flac": "empty_file"}
    again, _ = read(AudioSource(paths=[str(tmp_path)], label_from="folder"))
    assert again.column("id").to_pylist() == table.column("id").to_pylist()  # stable ids


def test_a_truncated_flac_is_quarantined_and_the_label_pattern(tmp_path: Path) -> None:
    tone(tmp_path / "3_anna_0.flac", 300, 2.0, 16000)
    tone(tmp_path / "x_anna_1.wav", 300, 0.1, 16000)
    data = (tmp_path / "3_anna_0.flac").read_bytes()
    (tmp_path / "4_bob_0.flac").write_bytes(data[: len(data) // 2])
    table, ctx = read(
        AudioSource(paths=[str(tmp_path)], label_from="pattern", label_pattern=r"^(?P<label>\d+)_")
    )
    assert dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist(), strict=True)) == {
        f"audio:{tmp_path / '3_anna_0.flac'}": "3",
        f"audio:{tmp_path / 'x_anna_1.wav'}": None,  # the pattern does not match: no label
    }
    assert [(Path(r["location"]).name, r["reason"]) for r in ctx.rejected] == [
        ("4_bob_0.flac", "unreadable_audio")
    ]


def test_config_errors_name_the_option(tmp_path: Path) -> None:
    tone(tmp_path / "a.wav", 300, 0.1, 8000)
    with pytest.raises(ConfigError, match="label_pattern"):
        AudioSource(paths=[str(tmp_path)], label_from="pattern").check("sources.0")
    with pytest.raises(ConfigError, match="needs a group"):
        AudioSource(paths=[str(tmp_path)], label_from="pattern", label_pattern=r"\d+").check("sources.0")
    with pytest.raises(ConfigError, match="no file matches"):
        AudioSource(paths=[str(tmp_path / "none")]).check("sources.0")


def test_the_spoken_digits(shared_data: Path) -> None:
    """../shared/data/audio: recordings of spoken digits (8 kHz mono WAV) labelled by name."""
    audio = shared_data / "audio"
    if not audio.is_dir():
        pytest.skip("../shared/data/audio is absent")
    table, ctx = read(AudioSource(paths=[str(audio)], label_from="pattern", label_pattern=r"^(\d)_"))
    assert not ctx.rejected
    assert table.num_rows == len(list(audio.glob("*.wav")))
    assert set(table.column("sample_rate").to_pylist()) == {8000}
    assert set(table.column("channels").to_pylist()) == {1}
    assert set(table.column("label").to_pylist()) <= {str(d) for d in range(10)}
    durations = table.column("duration_s").to_pylist()
    assert min(durations) > 0.1 and max(durations) < 2.0  # single spoken digits
