"""API keys with and without write rights, and a key table from before the flag (SQLite and
PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from genloom.cli import app
from genloom.core.catalog import Catalog
from genloom.serve.keys import KeyStore
from tests.core.test_catalog import catalog  # noqa: F401  (SQLite, then PostgreSQL)


def test_only_a_write_key_verifies_for_writing(tmp_path: Path) -> None:
    store = KeyStore(create_engine(f"sqlite:///{tmp_path / 'k.db'}"))
    read_id, read_key = store.create("reader")
    write_id, write_key = store.create("writer", write=True)
    assert store.verify(read_key) == read_id and store.verify(read_key, write=True) is None
    assert store.verify(write_key, write=True) == write_id
    assert {r["id"]: r["can_write"] for r in store.list()} == {read_id: False, write_id: True}
    store.revoke(write_id)
    assert store.verify(write_key, write=True) is None


def test_an_older_key_table_gains_the_flag_and_its_keys_read_only(catalog: Catalog) -> None:  # noqa: F811
    engine = catalog.engine
    with engine.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS api_keys"))  # as a catalog made before the flag had it
        c.execute(
            text(
                "CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, "
                "salt VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL, created_at TIMESTAMP NOT NULL, "
                "revoked_at TIMESTAMP)"
            )
        )
        c.execute(text("INSERT INTO api_keys VALUES ('old', 'o', 'aa', 'bb', '2026-01-01 00:00:00', NULL)"))
    store = KeyStore(engine)
    assert store.list()[0]["can_write"] is False
    key_id, key = store.create("new", write=True)
    assert store.verify(key, write=True) == key_id


def test_keys_create_write_and_list_show_the_right(tmp_path: Path) -> None:
    from tests.conftest import write_pipeline

    path = write_pipeline(tmp_path / "proj")
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "editor", "--write", "-p", str(path)])
    assert made.exit_code == 0, made.output
    assert "read and write" in made.output
    listed = runner.invoke(app, ["keys", "list", "-p", str(path)])
    assert "editor" in listed.output and "yes" in listed.output
