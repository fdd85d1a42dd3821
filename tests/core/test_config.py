"""Config mistakes stop before any work with a one-line message naming the place and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from genloom.cli import app
from genloom.core.config import apply_override, load_config, substitute_env
from genloom.core.errors import ConfigError
from tests.conftest import write_pipeline

runner = CliRunner()


def _validate(path: Path) -> tuple[int, str]:
    res = runner.invoke(app, ["validate", str(path)])
    return res.exit_code, res.output


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"clean": [{"type": "length", "min_char": 5}]},
            "clean.0.min_char: unknown key 'min_char' (did you mean 'min_chars'?",
        ),
        (
            {"clean": [{"type": "length", "min_chars": "many"}]},
            "clean.0.min_chars: Input should be a valid integer",
        ),
        (
            {"clean": [{"type": "dedup_exakt"}]},
            "clean.0.type: unknown clean component 'dedup_exakt' (did you mean 'dedup_exact'?",
        ),
        ({"split": {"val_fraction": 2}}, "split.val_fraction: Input should be less than 1"),
        (
            {"sources": [{"type": "python_docs", "topics": True}], "executr": {}},
            "executr: unknown key 'executr' (did you mean 'executor'?",
        ),
        ({"executor": {"type": "rayy"}}, "executor.type"),
    ],
)
def test_config_mistakes_name_the_place_and_fix(tmp_path: Path, overrides: dict, expected: str) -> None:
    path = write_pipeline(tmp_path, **overrides)
    code, output = _validate(path)
    assert code == 2
    assert expected in " ".join(output.split()), output


def test_missing_env_secret_names_the_variable(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, catalog={"url": "postgresql+psycopg://u:${env:GENLOOM_TEST_NOPE}@h/db"})
    code, output = _validate(path)
    assert code == 2
    assert "catalog.url: environment variable GENLOOM_TEST_NOPE is not set" in output
    assert "export GENLOOM_TEST_NOPE" in output


def test_env_substitution_and_default() -> None:
    data = {"a": "x-${env:FOO}-y", "b": ["${env:MISSING:-fallback}"]}
    assert substitute_env(data, {"FOO": "1"}) == {"a": "x-1-y", "b": ["fallback"]}


def test_set_overrides_nested_and_list_items() -> None:
    raw = {"clean": [{"type": "length", "min_chars": 1}], "train": {}}
    apply_override(raw, "clean.0.min_chars=300")
    apply_override(raw, "train.max_steps=20")
    assert raw["clean"][0]["min_chars"] == 300 and raw["train"]["max_steps"] == 20
    with pytest.raises(ConfigError, match="clean.5"):
        apply_override(raw, "clean.5.min_chars=1")


def test_missing_input_path_is_a_config_error_and_nothing_is_written(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, sources=[{"type": "files", "paths": ["nowhere/*.txt"]}])
    result = subprocess.run(
        [sys.executable, "-m", "genloom.cli", "run", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "sources.0.paths" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".genloom").exists()


def test_frozen_config_and_defaults(project: Path) -> None:
    cfg = load_config(project)
    assert cfg.executor.type == "local" and cfg.store.path == ".genloom/artifacts"
    with pytest.raises(ValidationError):
        cfg.name = "other"


def test_schema_is_json_schema() -> None:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    assert "sources" in schema["properties"] and "train" in schema["properties"]


def test_yaml_syntax_error_is_reported_with_line(tmp_path: Path) -> None:
    p = tmp_path / "pipeline.yaml"
    p.write_text("name: x\nsources: [\n")
    code, output = _validate(p)
    assert code == 2 and "line" in output


def test_a_ray_cluster_needs_a_store_every_node_reaches(tmp_path: Path) -> None:
    """A cluster address with a store folder on local disk stops before any work, unless the
    nodes share a filesystem; a Ray Client driver cannot run shards that read this machine's files."""
    path = write_pipeline(tmp_path / "p")
    cluster = ["executor.type=ray", "executor.address=10.0.0.1:6379"]
    with pytest.raises(ConfigError, match="cannot reach this machine's store folder") as e:
        load_config(path, cluster)
    assert e.value.path == "store.path"
    assert load_config(path, [*cluster, "executor.shared_filesystem=true"]).executor.shared_filesystem
    assert load_config(path, [*cluster, "store.path=s3://bucket/prefix"]).store.path == "s3://bucket/prefix"
    client = ["executor.type=ray", "executor.address=ray://10.0.0.1:10001", "store.path=s3://bucket/prefix"]
    with pytest.raises(ConfigError, match="not a node of the cluster") as e:
        load_config(path, client)  # python_docs reads this interpreter's packages
    assert e.value.path == "sources.0"
    assert load_config(path, ["executor.type=ray"]).executor.address is None  # a local runtime: no check


def test_store_options_hold_credentials_as_secrets(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p")
    cfg = load_config(
        path, ["store.path=s3://b/p", "store.options={endpoint_url: http://h:9, secret: s3cr3t-x}"]
    )
    assert cfg.store.options["secret"].get_secret_value() == "s3cr3t-x"
    assert "s3cr3t-x" not in repr(cfg) + cfg.model_dump_json()
    assert cfg.store.options["endpoint_url"] == "http://h:9"
