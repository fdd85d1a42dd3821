"""The server's tables (API keys, the request log, feedback) on both catalog backends: SQLite and
the machine's PostgreSQL, through a real app serving a table model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genloom.core.catalog import Catalog
from genloom.serve.app import ServedModel, create_app
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog

from .conftest import StubTableFamily, ready_client

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def any_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A catalog on SQLite, or in a schema of its own on PostgreSQL (dropped after the test)."""
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


def test_keys_requests_and_feedback_are_stored(any_catalog: Catalog, tmp_path: Path) -> None:
    keys = KeyStore(any_catalog.engine)
    key_id, key = keys.create("team")
    model = ServedModel("adult", 3, tmp_path, StubTableFamily(), {}, 1700000000)
    app = create_app(lambda: model, any_catalog, keys=keys, settings=ServeSettings(require_key=True))
    auth = {"Authorization": f"Bearer {key}"}
    with ready_client(app) as client:
        assert client.post("/v1/samples", json={"n": 2}).status_code == 401  # no key
        r = client.post("/v1/samples", json={"n": 2, "seed": 1}, headers=auth)
        assert r.status_code == 200 and len(r.json()["rows"]) == 2
        rid = r.headers["X-Request-ID"]
        fb = client.post(
            "/v1/feedback", json={"request_id": rid, "rating": 1, "correction": "ok"}, headers=auth
        )
        assert fb.status_code == 200
        assert (
            client.post("/v1/feedback", json={"request_id": "nope", "rating": 1}, headers=auth).status_code
            == 404
        )
    log = RequestLog(any_catalog.engine)
    row = log.get(rid)
    assert row is not None
    got = (row["endpoint"], row["status"], row["model"], row["version"], row["key_id"])
    assert got == ("/v1/samples", 200, "adult", 3, key_id)
    assert row["latency_s"] > 0 and '"n": 2' in (row["prompt"] or "")
    (stored,) = log.feedback(rid)
    assert stored["rating"] == 1 and stored["correction"] == "ok"
    assert key not in str(log.recent(10)) and key not in str(keys.list())  # only the key's hash is stored
    keys.revoke(key_id)
    with ready_client(
        create_app(lambda: model, any_catalog, keys=keys, settings=ServeSettings(require_key=True))
    ) as client:
        assert client.post("/v1/samples", json={"n": 1}, headers=auth).status_code == 401  # revoked
