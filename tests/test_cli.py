"""The command line as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from genloom.cli import app
from tests.conftest import TINY_TRAIN, write_pipeline

runner = CliRunner()


def test_init_writes_a_valid_commented_pipeline(tmp_path: Path) -> None:
    res = runner.invoke(app, ["init", str(tmp_path / "my proj")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "my proj" / "pipeline.yaml").read_text()
    assert text.count("#") > 10 and "name: my-proj" in text
    assert (tmp_path / "my proj" / "data").is_dir()
    assert runner.invoke(app, ["validate", str(tmp_path / "my proj" / "pipeline.yaml")]).exit_code == 0
    assert runner.invoke(app, ["init", str(tmp_path / "my proj")]).exit_code == 1  # never overwrites


def test_run_status_explain_lineage_rejected_generate(tmp_path: Path) -> None:
    path = str(write_pipeline(tmp_path, train=TINY_TRAIN))
    res = runner.invoke(app, ["run", path])
    assert res.exit_code == 0, res.output
    assert "champion" in res.output and "genloom generate" in res.output

    res = runner.invoke(app, ["run", path, "--log-format", "json"])
    events = [json.loads(line) for line in res.output.splitlines()]
    ends = [e for e in events if e["event"] == "stage_end"]
    assert ends and all(e["status"] in ("cached", "skipped") for e in ends)
    assert events[-1]["text"] == "summary" and events[-1]["status"] == "succeeded"

    assert "cached" in runner.invoke(app, ["explain", path]).output
    assert "champion" in runner.invoke(app, ["status", path]).output
    res = runner.invoke(app, ["lineage", "python_docs:module/json/__init__.py", "-f", path])
    assert res.exit_code == 0 and "ingest" in res.output and "model t v1" in res.output
    assert runner.invoke(app, ["lineage", "python_docs:nope", "-f", path]).exit_code == 1
    assert runner.invoke(app, ["rejected", path]).exit_code == 0

    res = runner.invoke(
        app, ["generate", path, "--prompt", "The json", "--max-new-tokens", "8", "--seed", "1"]
    )
    assert res.exit_code == 0 and res.output.startswith("The json")

    res = runner.invoke(app, ["run", path, "--until", "nope"])
    assert res.exit_code == 1 and "unknown stage" in res.output


def test_generate_without_a_model_says_what_to_do(project: Path) -> None:
    res = runner.invoke(app, ["generate", str(project), "--prompt", "x"])
    assert res.exit_code == 1 and "genloom run" in res.output
