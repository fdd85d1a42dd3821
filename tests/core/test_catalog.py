"""The catalog on SQLite and on the machine's PostgreSQL: same tests, both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genloom.core.catalog import Catalog

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        yield cat
        cat.close()
        return
    if not _pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    cat = Catalog(f"{PG_URL}?options=-csearch_path%3D{schema}")
    yield cat
    cat.close()
    with admin.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_runs_stages_artifacts_and_lineage(catalog: Catalog) -> None:
    catalog.start_run("r1", "p", "p.yaml")
    catalog.record_stage("r1", "ingest", "k1", "ran", "first run", 1.5, {"rows": 3})
    catalog.add_artifact("k1", "ingest", "p", "dataset", "/x/k1", "r1", 3, {"a": 1}, [])
    catalog.add_artifact("k2", "clean", "p", "dataset", "/x/k2", "r1", 2, {"b": 2}, ["k1"])
    catalog.add_artifact("k2", "clean", "p", "dataset", "/x/k2", "r1", 2, {"b": 2}, ["k1"])  # idempotent
    catalog.finish_run("r1", "succeeded", {"ok": True})
    assert catalog.runs("p")[0]["status"] == "succeeded"
    assert catalog.stage_runs("r1")[0]["reason"] == "first run"
    assert catalog.children("k1") == ["k2"]
    assert catalog.latest_artifact("p", "clean")["ingredients"] == {"b": 2}


def test_model_versions_and_promotion(catalog: Catalog) -> None:
    v1 = catalog.register_model("m", "a1", "/m/a1", {"val_bpc": 3.0}, "r1")
    assert (v1["version"], v1["stage"]) == (1, "candidate")
    assert catalog.register_model("m", "a1", "/m/a1", {}, "r1")["version"] == 1  # same artifact, same version
    catalog.promote("m", 1)
    v2 = catalog.register_model("m", "a2", "/m/a2", {"val_bpc": 2.0}, "r2")
    assert v2["version"] == 2 and catalog.champion("m")["version"] == 1
    catalog.promote("m", 2)
    stages = {m["version"]: m["stage"] for m in catalog.models("m")}
    assert stages == {1: "archived", 2: "champion"}
