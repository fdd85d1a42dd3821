"""Every example pipeline validates and runs end to end in a smoke mode (tiny model, few steps)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genloom.core.config import load_config
from genloom.pipeline import Pipeline

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*/pipeline.yaml"))
SMOKE = [
    "train.model.preset=tiny",
    "train.time_budget=null",
    "train.max_steps=15",
    "train.batch_size=4",
    "train.eval_tokens=2048",
    "train.threads=1",
    "train.tokenizer.vocab_size=512",
]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_runs_in_smoke_mode(path: Path, tmp_path: Path) -> None:
    folder = tmp_path / path.parent.name
    shutil.copytree(path.parent, folder, ignore=shutil.ignore_patterns(".genloom"))
    overrides = list(SMOKE)
    if path.parent.name == "quickstart":
        overrides.append("sources.0.packages=[json, textwrap]")
    summary = Pipeline.from_file(folder / "pipeline.yaml", overrides=overrides).run()
    assert summary.status == "succeeded"
    assert summary.model is not None and summary.model["version"] == 1
