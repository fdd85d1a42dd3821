"""Concurrent registrations and promotions on SQLite and PostgreSQL: the database keeps version
numbers unique and one champion per name, whoever wins each race."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from genloom.core.catalog import Catalog
from genloom.core.errors import GenloomError
from tests.core.test_catalog import catalog  # noqa: F401  (SQLite, then PostgreSQL)

WRITERS = 6


def _race(fns: list[Callable[[], Any]]) -> list[Any]:
    """Run the functions on threads released together; re-raise the first failure."""
    barrier = threading.Barrier(len(fns))
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def _writers(catalog: Catalog) -> list[Catalog]:  # noqa: F811
    # one engine each, like separate `genloom run` processes sharing the catalog
    return [Catalog(catalog.url) for _ in range(WRITERS)]


def test_concurrent_registrations_get_distinct_versions(catalog: Catalog) -> None:  # noqa: F811
    writers = _writers(catalog)
    try:
        got = _race(
            [
                lambda w=w, i=i: w.register_model("m", f"art{i}", f"/x/{i}", {"loss": i}, f"r{i}")
                for i, w in enumerate(writers)
            ]
        )
        # the same artifact registered at once by every writer is one version
        same = _race([lambda w=w: w.register_model("m", "shared", "/x/s", {}, "rs") for w in writers])
    finally:
        for w in writers:
            w.close()
    versions = sorted(v["version"] for v in got)
    assert versions == list(range(1, WRITERS + 1))
    assert {v["version"] for v in same} == {WRITERS + 1}
    assert len(catalog.models("m")) == WRITERS + 1


def test_concurrent_promotions_leave_one_champion(catalog: Catalog) -> None:  # noqa: F811
    for i in range(WRITERS):
        catalog.register_model("m", f"art{i}", f"/x/{i}", {}, "r")
    catalog.promote("m", 1)
    writers = _writers(catalog)
    try:
        _race([lambda w=w, v=v: w.promote("m", v) for v, w in enumerate(writers, start=1)])
    finally:
        for w in writers:
            w.close()
    stages = [m["stage"] for m in catalog.models("m")]
    assert stages.count("champion") == 1
    assert stages.count("archived") == WRITERS - 1
    assert catalog.champion("m") is not None


def test_the_database_rejects_a_second_champion_and_a_duplicate_version(catalog: Catalog) -> None:  # noqa: F811
    catalog.register_model("m", "a1", "/x/1", {}, "r")
    catalog.register_model("m", "a2", "/x/2", {}, "r")
    catalog.promote("m", 1)
    from genloom.core.catalog import model_versions

    # bypassing promote: the index itself refuses a second champion
    with pytest.raises(sa.exc.IntegrityError), catalog.engine.begin() as c:
        c.execute(sa.update(model_versions).where(model_versions.c.version == 2).values(stage="champion"))
    with pytest.raises(sa.exc.IntegrityError), catalog.engine.begin() as c:
        c.execute(sa.update(model_versions).where(model_versions.c.version == 2).values(version=1))


def _old_catalog(path: Path, rows: list[tuple[str, int, str, str]]) -> str:
    """A catalog made before the indexes existed (the table as the old code created it)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE model_versions (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(200) NOT NULL,"
        " version INTEGER NOT NULL, artifact_key VARCHAR(64) NOT NULL, uri TEXT NOT NULL,"
        " stage VARCHAR(20) NOT NULL, metrics JSON, run_id VARCHAR(32), created_at DATETIME NOT NULL)"
    )
    db.executemany(
        "INSERT INTO model_versions (name, version, artifact_key, uri, stage, created_at)"
        " VALUES (?, ?, ?, '/x', ?, '2026-01-01 00:00:00')",
        rows,
    )
    db.commit()
    db.close()
    return f"sqlite:///{path}"


def test_an_older_sqlite_catalog_gets_the_indexes(tmp_path: Path) -> None:
    url = _old_catalog(tmp_path / "old.db", [("m", 1, "a1", "archived"), ("m", 2, "a2", "champion")])
    cat = Catalog(url)
    try:
        names = {i["name"] for i in sa.inspect(cat.engine).get_indexes("model_versions")}
        assert {"uq_model_versions_name_version", "uq_model_versions_one_champion"} <= names
        assert cat.register_model("m", "a3", "/x/3", {}, "r")["version"] == 3
        cat.promote("m", 3)
        assert [m["stage"] for m in cat.models("m")] == ["champion", "archived", "archived"]
    finally:
        cat.close()


def test_an_older_catalog_with_two_champions_is_reported(tmp_path: Path) -> None:
    url = _old_catalog(tmp_path / "bad.db", [("m", 1, "a1", "champion"), ("m", 2, "a2", "champion")])
    with pytest.raises(GenloomError, match="uq_model_versions_one_champion"):
        Catalog(url)
