"""Fine-tuning a local Hugging Face model through ``genloom run``, from another working directory."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml
from tests.models.test_hf_causal_lm import _make_base
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline

pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.mark.slow
def test_lora_fine_tuning_from_another_folder_evaluates_registers_and_generates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(0)
    docs = [" ".join(rng.choice(["red", "green", "blue"]) + " fish" for _ in range(12)) for _ in range(120)]
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    for i, d in enumerate(docs):
        (project / "data" / f"doc{i:03d}.txt").write_text(d)
    torch.manual_seed(0)  # the random base's weights: the same model on every run
    _make_base(project, hidden=32)  # project/base: a random 2-layer Llama and its tokenizer
    cfg = {
        "name": "fish",
        "sources": [{"type": "text", "paths": ["data"]}],
        "split": {"val_fraction": 0.1},
        "train": {
            "model": {"type": "hf_causal_lm", "path": "base", "lora": {"r": 4, "alpha": 8}, "block_size": 64},
            "max_steps": 30,
            "batch_size": 8,
            "lr": 0.01,
            "eval_interval": 15,
            "eval_tokens": 1024,
            "threads": 1,
            "precision": "fp32",  # the same numbers whatever the machine probe finds
        },
        "evaluate": {"gates": {"val_loss": {"max": 20}}},
    }
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the base model path is relative to the pipeline file, not here
    runner = CliRunner()
    res = runner.invoke(app, ["run", "../project/pipeline.yaml"])
    assert res.exit_code == 0, res.output
    assert not (elsewhere / ".genloom").exists() and not (elsewhere / "base").exists()

    p = Pipeline.from_file("../project/pipeline.yaml")
    try:
        champion = p.catalog.champion("fish")
        assert champion is not None and champion["version"] == 1
        metrics = champion["metrics"]
    finally:
        p.close()
    assert metrics["steps"] == 30 and metrics["val_loss"] < metrics["train_loss"] + 1.0
    # the LoRA-tuned model learned the corpus: its loss is far below the random base's
    assert metrics["val_loss"] < 3.0, metrics

    res = runner.invoke(
        app,
        [
            "generate",
            "../project/pipeline.yaml",
            "--prompt",
            "red fish",
            "--max-new-tokens",
            "12",
            "--temperature",
            "0.2",
            "--seed",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    # the prompt, then a continuation of the pattern (a 30-step LoRA on a random base still emits
    # stray byte tokens, so only the word is asserted)
    assert res.output.startswith("red fish") and "fish" in res.output[len("red fish") :], res.output
