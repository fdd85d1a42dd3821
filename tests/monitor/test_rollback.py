"""`genloom rollback` re-promotes the previous champion and records the decision."""

from __future__ import annotations

import pytest
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


def test_rollback_whose_decision_cannot_be_stored_keeps_the_champion(tmp_path):
    from sqlalchemy.exc import IntegrityError

    from genloom.core.catalog import Catalog
    from genloom.monitor.rollback import rollback

    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    for k in ("a", "b"):
        catalog.promote("m", catalog.register_model("m", k, f"/m/{k}", {}, "r")["version"])
    # the decision row breaks its NOT NULL reason: the promotion, in the same transaction, is undone
    with pytest.raises(IntegrityError):
        rollback(catalog, "m", reason=None)  # type: ignore[arg-type]
    assert catalog.champion("m")["version"] == 2
    assert catalog.model_version("m", 1)["stage"] == "archived"
    assert MonitorLog(catalog.engine).decisions(model="m") == []
    assert rollback(catalog, "m")["champion_version"] == 1
    assert MonitorLog(catalog.engine).decisions(model="m")[0]["action"] == "rollback"
    catalog.close()
