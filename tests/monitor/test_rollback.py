"""`genloom rollback` re-promotes the previous champion and records the decision."""

from __future__ import annotations

from typer.testing import CliRunner

from genloom.cli import app
from genloom.monitor.store import MonitorLog
from genloom.pipeline import Pipeline
from tests.conftest import write_pipeline


def test_rollback_cli(tmp_path):
    path = write_pipeline(tmp_path / "p")
    p = Pipeline.from_file(path)
    name = p.model_name
    for k in ("a", "b", "c"):
        v = p.catalog.register_model(name, k, f"/m/{k}", {}, "r")["version"]
        p.catalog.promote(name, v)
    p.close()
    runner = CliRunner()
    r = runner.invoke(app, ["rollback", str(path)])
    assert r.exit_code == 0, r.output
    p = Pipeline.from_file(path)
    assert p.catalog.champion(name)["version"] == 2
    assert p.catalog.model_version(name, 3)["stage"] == "archived"
    dec = MonitorLog(p.catalog.engine).decisions(model=name)
    assert dec[0]["action"] == "rollback" and dec[0]["champion_version"] == 2
    assert dec[0]["challenger_version"] == 3
    r = runner.invoke(app, ["rollback", str(path), "--to", "3"])
    assert r.exit_code == 0 and p.catalog.champion(name)["version"] == 3
    r = runner.invoke(app, ["rollback", str(path), "--to", "9"])
    assert r.exit_code == 1 and p.catalog.champion(name)["version"] == 3
    p.close()
