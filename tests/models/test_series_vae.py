"""The series VAE through the one loop on four small sensors: conditioning on the device type
changes what it generates (meters near 200, thermostats near 20), a killed run resumes exactly,
samples have the window schema (or the long one), and a pipeline file runs end to end to
``genloom sample --where device=thermostat``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from tests.models.test_series_data import SENSORS, prepare_input, readings  # noqa: E402

from genloom.core.errors import ConfigError
from genloom.train.config import TrainConfig


def _known(model_type: str) -> bool:
    try:
        TrainConfig(model={"type": model_type})  # type: ignore[arg-type]
    except ValidationError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _known("series_vae"),
    reason="models/config.py's ModelConfig union lacks SeriesVAEConfig/SeriesGANConfig (see the series report)",
)


class Killed(Exception):
    pass


def train_config(model: dict[str, Any], **kw: Any) -> TrainConfig:
    """A tiny model config with its loop settings."""
    base = {
        "window": {"size": 24, "step": "1h", "fill": "linear"},
        "conditions": ["device", "site"],
        "hidden_dim": 16,
        "num_layers": 1,
        "batch_size": 16,
    }
    settings = {"threads": 1, "precision": "fp32", "log_interval": 1, **kw}
    return TrainConfig(model={**base, **model}, **settings)  # type: ignore[arg-type]


def prepare(cfg: TrainConfig, out: Path, hours: int = 24 * 12) -> Path:
    """The family's prepare of the four sensors into ``out``."""
    from genloom.models.base import family

    out.mkdir(parents=True, exist_ok=True)
    family(cfg.model.type).prepare(prepare_input(readings(hours=hours)), cfg, out)
    return out


def train(
    cfg: TrainConfig, prepared: Path, out: Path, kill_after: int | None = None
) -> dict[str, Any] | None:
    """The train stage: model files copied, the one loop run (raising Killed after ``kill_after`` steps)."""
    from genloom.models.base import family
    from genloom.train.loop import train_prepared

    out.mkdir(parents=True, exist_ok=True)
    for name in family(cfg.model.type).model_files:
        (out / name).write_bytes((prepared / name).read_bytes())

    def progress(step: int, total: int | None, info: dict[str, Any]) -> None:
        if kill_after is not None and step > kill_after:
            raise Killed

    try:
        return train_prepared(cfg, prepared, out, progress)
    except Killed:
        return None


def assert_resumes_exactly(cfg: TrainConfig, tmp_path: Path) -> None:
    """A run killed after its step-4 checkpoint and restarted ends with the weights of a straight run."""
    cfg = cfg.model_copy(update={"max_steps": 8, "checkpoint_interval": 4, "eval_interval": 4})
    prepared = prepare(cfg, tmp_path / "prepared", hours=24 * 6)
    straight = train(cfg, prepared, tmp_path / "a")
    assert straight is not None and straight["steps"] == 8
    assert train(cfg, prepared, tmp_path / "b", kill_after=4) is None
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train(cfg, prepared, tmp_path / "b")
    assert resumed is not None and resumed["steps"] == 8
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_loss"] == straight["val_loss"]


def level_by_device(fam: Any, model_dir: Path, n: int = 48) -> dict[str, float]:
    """Mean generated 'value' per asked device type (same seed)."""
    out = {}
    for device in ("thermostat", "meter"):
        table = fam.sample(model_dir, n, {"device": device}, seed=3)
        assert set(table.column("device").to_pylist()) == {device}
        out[device] = float(np.array(table.column("values").to_pylist())[:, :, 0].mean())
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("series_vae")
    cfg = train_config({"type": "series_vae", "latent_dim": 4, "lr": 1e-2}, max_steps=50, eval_interval=50)
    prepared = prepare(cfg, tmp / "prepared")
    assert train(cfg, prepared, tmp / "model") is not None
    return tmp / "model"


def test_conditioning_on_the_device_changes_the_series(trained: Path) -> None:
    from genloom.models.series_vae import SeriesVAEFamily

    levels = level_by_device(SeriesVAEFamily(), trained)
    assert levels["meter"] > 120 > 60 > levels["thermostat"], (
        levels
    )  # the meters near 200, thermostats near 20


def test_a_calendar_condition_changes_the_series(tmp_path: Path) -> None:
    """One sensor whose days are near 20 on weekdays and near 200 at weekends (2024-01-01 was a
    Monday): conditioned on the window's weekday, a Saturday is drawn near 200 and a Tuesday near 20."""
    from genloom.models.base import family

    t0 = 1_704_067_200 * 1_000_000  # 2024-01-01T00:00Z in microseconds
    hour = 3_600_000_000
    hours = 24 * 7 * 6
    rng = np.random.default_rng(0)
    level = [200.0 if (h // 24) % 7 >= 5 else 20.0 for h in range(hours)]
    table = pa.table(
        {
            "ts": pa.array([t0 + h * hour for h in range(hours)], pa.timestamp("us", tz="UTC")),
            "series": ["s"] * hours,
            "value": [lv + 5 * np.sin(2 * np.pi * h / 24) + rng.normal(0, 1) for h, lv in enumerate(level)],
        }
    )
    cfg = train_config(
        {"type": "series_vae", "latent_dim": 4, "lr": 1e-2, "conditions": [], "calendar": ["weekday"]},
        max_steps=100,
        eval_interval=100,
    )
    fam = family("series_vae")
    (tmp_path / "prepared").mkdir()
    fam.prepare(prepare_input(table), cfg, tmp_path / "prepared")
    assert train(cfg, tmp_path / "prepared", tmp_path / "model") is not None
    got = {}
    for day in ("sat", "tue"):
        synth = fam.sample(tmp_path / "model", 32, {"weekday": day}, seed=3)
        assert set(synth.column("weekday").to_pylist()) == {day}
        got[day] = float(np.array(synth.column("values").to_pylist()).mean())
    assert got["sat"] > 120 > 60 > got["tue"], got


def test_samples_have_the_window_schema_and_the_long_one(trained: Path) -> None:
    from genloom.models.series_vae import SeriesVAEFamily

    fam = SeriesVAEFamily()
    table = fam.sample(trained, 5, {"site": "north"}, seed=0)
    assert table.column_names == ["window", "device", "site", "length", "values", "mask"]
    assert table.schema.field("values").type == pa.list_(pa.list_(pa.float32()))
    values = np.array(table.column("values").to_pylist())
    assert values.shape == (5, 24, 2) and np.isfinite(values).all()
    assert set(table.column("site").to_pylist()) == {"north"}
    meta = json.loads(table.schema.metadata[b"genloom"])
    assert meta["channels"] == ["value", "humidity"] and meta["step_ns"] == 3_600_000_000_000
    again = fam.sample(trained, 5, {"site": "north"}, seed=0)
    assert again.equals(table)  # the same seed, the same windows
    long = fam.sample(trained, 3, seed=1, format="long")
    assert long.column_names == ["window", "step", "device", "site", "value", "humidity"]
    assert long.num_rows == 3 * 24 and long.column("step").to_pylist()[:3] == [0, 1, 2]
    with pytest.raises(ConfigError, match="levels: meter, thermostat"):
        fam.sample(trained, 2, {"device": "toaster"})
    with pytest.raises(ConfigError, match="no condition colour"):
        fam.sample(trained, 2, {"colour": "red"})


def test_a_killed_run_resumes_exactly(tmp_path: Path) -> None:
    assert_resumes_exactly(train_config({"type": "series_vae", "latent_dim": 4}), tmp_path)


def test_a_pipeline_of_sensor_files_runs_and_samples_under_a_condition(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genloom.cli import app
    from genloom.pipeline import Pipeline

    table = readings(hours=24 * 8)
    with open(tmp_path / "readings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "sensor", "device", "site", "value", "humidity"])
        for r in table.to_pylist():
            w.writerow([r["ts"].isoformat(), r["series"], r["device"], r["site"], r["value"], r["humidity"]])
    (tmp_path / "pipeline.yaml").write_text(
        "name: sensors\n"
        "store: {path: .genloom/artifacts}\n"
        'catalog: {url: "sqlite:///.genloom/catalog.db"}\n'
        "sources: [{type: sensor_files, paths: [readings.csv], series_field: sensor}]\n"
        "train:\n  max_steps: 6\n  threads: 1\n  precision: fp32\n"
        "  model: {type: series_vae, window: {size: 24, step: 1h}, conditions: [device, site],"
        " calendar: [weekday], hidden_dim: 8, num_layers: 1, latent_dim: 2}\n"
    )
    summary = Pipeline.from_file(tmp_path / "pipeline.yaml").run()
    assert summary.status == "succeeded" and summary.model is not None
    prepare = next(s for s in summary.stages if s.stage == "prepare")
    assert prepare.stats["train_windows"] + prepare.stats["val_windows"] == 4 * 8
    evaluate = next(s for s in summary.stages if s.stage == "evaluate")
    assert 0 <= evaluate.stats["discriminative_score"] <= 0.5 and evaluate.stats["predictive_score"] > 0
    out = tmp_path / "synthetic.parquet"
    result = CliRunner().invoke(
        app,
        [
            "sample",
            str(tmp_path / "pipeline.yaml"),
            "-n",
            "7",
            "--where",
            "device=thermostat",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    synth = pq.read_table(out)
    assert synth.num_rows == 7 and set(synth.column("device").to_pylist()) == {"thermostat"}
    # a calendar condition, asked like any other (2024-01-02 was a Tuesday)
    result = CliRunner().invoke(
        app, ["sample", str(tmp_path / "pipeline.yaml"), "-n", "4", "--where", "weekday=tue", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    synth = pq.read_table(out)
    assert synth.num_rows == 4 and set(synth.column("weekday").to_pylist()) == {"tue"}
    assert set(synth.column("site").to_pylist()) <= {s[1] for s in SENSORS.values()}
