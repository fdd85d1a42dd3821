"""``monitor.skip`` leaves signals out (the sample checks are then not even built); the evaluation
gates run on the window's served outputs; a table model's window checks its requested
conditions. Through ``genloom monitor`` on registered models and a request log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from genloom.core.config import validate_config
from genloom.core.errors import ConfigError
from tests.monitor.test_monitor_cli import WORDS, _log, _rows, _texts
from tests.monitor.trained import trained_model

NO_SAMPLES = ["prompt_embedding", "output_embedding", "output_loss"]


def _configure(path, **monitor_and_evaluate) -> None:
    cfg = yaml.safe_load(path.read_text())
    cfg.update(monitor_and_evaluate)
    path.write_text(yaml.safe_dump(cfg))


def _monitor(path) -> dict:
    r = CliRunner().invoke(app, ["monitor", str(path), "--json"])
    assert r.exit_code in (0, 1), r.output
    return json.loads(r.output)


def test_gates_on_served_outputs_and_skip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path, p, _ = trained_model(tmp_path / "p", {"text": _texts(rng, 400, WORDS, 5, 15)})
    at = datetime.now(UTC) - timedelta(minutes=1)
    prompts = _texts(rng, 80, WORDS, 5, 15)
    looping = [" ".join(["the model said"] * 10)] * 80
    _log(p.catalog.engine, _rows(p.model_name, prompts, looping, at, "a"))
    p.close()
    _configure(
        path,
        evaluate={"gates": {"repetition_4": {"max": 0.3}, "val_bpc": {"max": 4.0}}},
        monitor={"skip": NO_SAMPLES},
    )
    report = _monitor(path)
    checks = {c["signal"]: c for c in report["checks"]}
    assert not set(NO_SAMPLES) & set(checks)
    rep = checks["gate:repetition_4"]
    assert rep["breached"] and rep["score"] > 0.8 and rep["threshold"] == 0.3
    assert rep["evidence"]["sample"] == 64 and rep["evidence"]["sampled_from"] == 80
    assert "gate:val_bpc" not in checks and "gate:repetition_4:gate" in report["breached"]

    _configure(path, monitor={"skip": [*NO_SAMPLES, "gate:", "latency_s", "prompt_oov_rate"]})
    checks = {c["signal"] for c in _monitor(path)["checks"]}
    assert not any(s.startswith("gate:") for s in checks)
    assert "latency_s" not in checks and "prompt_oov_rate" not in checks and "prompt_words" in checks


def test_a_table_models_requested_conditions(tmp_path) -> None:
    rng = np.random.default_rng(1)
    levels = list(rng.choice(["a", "b"], size=300))
    path, p, _ = trained_model(
        tmp_path / "p", {"c": levels, "x": list(rng.normal(size=300))}, model_type="tabular_gan"
    )
    at = datetime.now(UTC) - timedelta(minutes=1)
    asked = [json.dumps({"n": 10, "conditions": {"c": "z"}})] * 60
    rows = [{**r, "endpoint": "/v1/samples"} for r in _rows(p.model_name, asked, [None] * 60, at, "s")]
    _log(p.catalog.engine, rows)
    p.close()
    checks = {c["signal"]: c for c in _monitor(path)["checks"]}
    c = checks["condition:c"]
    assert c["breached"] and c["method"] == "js" and c["evidence"]["unseen_in_training"] == ["z"]
    _configure(path, monitor={"skip": ["condition:"]})
    assert "condition:c" not in {c["signal"] for c in _monitor(path)["checks"]}


def test_skip_names_known_signals() -> None:
    base = {"name": "m", "sources": [{"type": "manual", "path": "n.jsonl"}]}
    assert validate_config({**base, "monitor": {"skip": ["gate:distinct_2", "output_loss"]}}).monitor.skip
    with pytest.raises(ConfigError, match="unknown signal 'latency'"):
        validate_config({**base, "monitor": {"skip": ["latency"]}})


def test_an_earlier_window_as_the_reference(tmp_path) -> None:
    rng = np.random.default_rng(2)
    path, p, _ = trained_model(tmp_path / "p", {"text": _texts(rng, 400, WORDS, 5, 15)})
    other = [f"zq{i}" for i in range(200)]
    now = datetime.now(UTC)
    week = _rows(
        p.model_name,
        _texts(rng, 120, other, 5, 15),
        _texts(rng, 120, other, 5, 15),
        now - timedelta(hours=5),
        "w",
    )
    today = _rows(
        p.model_name,
        _texts(rng, 120, other, 5, 15),
        _texts(rng, 120, other, 5, 15),
        now - timedelta(minutes=5),
        "t",
    )
    _log(p.catalog.engine, week + today)
    p.close()
    _configure(path, monitor={"skip": NO_SAMPLES})

    def run(*args: str) -> dict:
        r = CliRunner().invoke(app, ["monitor", str(path), "--window", "1h", *args, "--json"])
        assert r.exit_code in (0, 1), r.output
        return json.loads(r.output)

    trained = {c["signal"]: c for c in run()["checks"] if c["method"] == "js"}
    assert trained["prompt_oov_rate"]["breached"]  # another vocabulary than the training data's
    against = run("--reference-window", "6h")
    assert against["profile"]["key"].startswith("requests:")
    checks = {f"{c['signal']}:{c['method']}": c for c in against["checks"]}
    assert not checks["prompt_oov_rate:js"]["breached"]  # the same as the earlier window's traffic
    assert "output_oov_rate:js" in checks and "latency_s:psi" in checks  # a request-log reference's extras
    r = CliRunner().invoke(
        app, ["monitor", str(path), "--window", "1h", "--reference-window", "10m", "--json"]
    )
    assert r.exit_code == 2 and "has no text requests" in r.output
