"""The one loop with a custom-step family (the CTGAN): a run killed after a checkpoint resumes exactly,
the generator's BatchNorm statistics included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("sklearn")

from tests.models.test_tabular_gan import gan_config, mixed_table, prepare_input  # noqa: E402

from genloom.models.tabular_gan import TabularGANFamily  # noqa: E402
from genloom.train.loop import train_prepared  # noqa: E402


class Killed(Exception):
    pass


def _run(prepared: Path, out: Path, kill_after: int | None = None) -> dict[str, Any] | None:
    cfg = gan_config().model_copy(
        update={
            "max_steps": 20,
            "checkpoint_interval": 10,
            "eval_interval": 10,
            "log_interval": 1,
            "threads": 1,
        }
    )
    fam = TabularGANFamily()
    out.mkdir(parents=True, exist_ok=True)
    for name in fam.model_files:  # as the train stage does
        (out / name).write_bytes((prepared / name).read_bytes())

    def progress(step: int, total: int | None, info: dict[str, Any]) -> None:
        if kill_after is not None and step > kill_after:
            raise Killed

    try:
        return train_prepared(cfg, prepared, out, progress)
    except Killed:
        return None


def test_a_killed_gan_run_resumes_exactly_with_its_batchnorm_statistics(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    TabularGANFamily().prepare(prepare_input(mixed_table(600)), gan_config(), prepared)
    straight = _run(prepared, tmp_path / "a")
    assert straight is not None and straight["steps"] == 20 and straight["rows"] == 20 * 200
    assert _run(prepared, tmp_path / "b", kill_after=10) is None  # killed after the step-10 checkpoint
    resumed = _run(prepared, tmp_path / "b")
    assert resumed is not None and resumed["steps"] == 20
    a, b = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    running = [k for k in a if k.endswith("running_mean")]
    assert running and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_time_budget_sizes_a_table_schedule_unless_epochs_are_given(tmp_path: Path) -> None:
    """``train.time_budget`` without ``epochs``: the plan leaves the steps to the loop's measured
    sizing; with ``epochs`` (or ``max_steps``) the passes decide, as without a budget."""
    from genloom.models.config import TabularGANConfig
    from genloom.train.plan import make_plan

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    fam = TabularGANFamily()
    fam.prepare(prepare_input(mixed_table(600)), gan_config(), prepared)
    data = fam.open_data(prepared, tmp_path)
    device = torch.device("cpu")
    budget = gan_config().model_copy(update={"time_budget": "30s"})
    assert make_plan(budget, data, device).max_steps is None  # sized by the loop from timed steps
    with_epochs = budget.model_copy(
        update={"model": TabularGANConfig(**{**budget.model.model_dump(), "epochs": 3})}
    )
    assert "epochs" in with_epochs.model.model_fields_set
    assert make_plan(with_epochs, data, device).max_steps == 3 * -(-data.n_train // 200)
    assert make_plan(gan_config(), data, device).max_steps == 100 * -(-data.n_train // 200)  # default epochs
