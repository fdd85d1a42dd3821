"""TimeGAN through the one loop on four small sensors: its three phases run in order, the asked
condition changes what it generates, a killed run resumes exactly (every phase's updates and the
discriminator's threshold included), and samples have the window schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.models.test_series_vae import (  # noqa: E402
    _known,
    assert_resumes_exactly,
    prepare,
    train,
    train_config,
)

pytestmark = pytest.mark.skipif(
    not _known("series_gan"),
    reason="models/config.py's ModelConfig union lacks SeriesGANConfig (see the series report)",
)

GAN = {"type": "series_gan", "hidden_dim": 8, "num_layers": 1, "batch_size": 16}


def test_the_phases_follow_the_schedule() -> None:
    from genloom.models.base import TrainPlan
    from genloom.models.series_gan import SeriesGANFamily

    plan = TrainPlan(
        type="series_gan", max_steps=20, model={"embedding_fraction": 0.25, "supervised_fraction": 0.15}
    )
    phases = [SeriesGANFamily.phase(plan, s) for s in range(20)]
    assert phases == ["embedding"] * 5 + ["supervised"] * 3 + ["joint"] * 12


def test_training_runs_every_phase_and_the_condition_changes_the_output(tmp_path: Path) -> None:
    import json

    from genloom.models.series_gan import SeriesGANFamily

    cfg = train_config(GAN, max_steps=12, eval_interval=12)
    prepared = prepare(cfg, tmp_path / "prepared", hours=24 * 6)
    metrics = train(cfg, prepared, tmp_path / "model")
    assert metrics is not None and np.isfinite(metrics["val_loss"])
    state = next((tmp_path / "model" / "checkpoints").glob("step_*/state.json"))
    logged = [h for h in json.loads(state.read_text())["history"] if "loss" in h]
    assert "reconstruction" in logged[0] and "generator" not in logged[0]  # phase 1: embedding
    assert "supervised" in logged[3] and "generator" not in logged[3]  # phase 2: supervised
    assert {"generator", "discriminator", "moments"} <= set(logged[-1])  # phase 3: joint
    fam = SeriesGANFamily()
    a = np.array(
        fam.sample(tmp_path / "model", 8, {"device": "meter", "site": "north"}, seed=0)
        .column("values")
        .to_pylist()
    )
    b = np.array(
        fam.sample(tmp_path / "model", 8, {"device": "thermostat", "site": "north"}, seed=0)
        .column("values")
        .to_pylist()
    )
    assert a.shape == b.shape == (8, 24, 2) and np.isfinite(a).all()
    assert np.abs(a - b).mean() > 1e-3  # the same noise, another condition: another series


def test_a_killed_run_resumes_exactly(tmp_path: Path) -> None:
    # 8 steps: 2 embedding, 1 supervised, 5 joint; killed after the step-4 checkpoint (in the joint phase)
    assert_resumes_exactly(train_config(GAN), tmp_path)
