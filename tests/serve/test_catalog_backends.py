"""The server's tables (API keys, the request log, feedback) on both catalog backends: SQLite and
the machine's PostgreSQL, through a real app serving a table model."""

from __future__ import annotations

from pathlib import Path

from genloom.core.catalog import Catalog
from genloom.serve.app import ServedModel, create_app
from genloom.serve.keys import KeyStore
from genloom.serve.schemas import ServeSettings
from genloom.serve.traffic import RequestLog
from tests.core.test_catalog import catalog  # noqa: F401  (the same fixture: SQLite, then PostgreSQL)

from .conftest import StubTableFamily, ready_client


def test_keys_requests_and_feedback_are_stored(catalog: Catalog, tmp_path: Path) -> None:  # noqa: F811
    keys = KeyStore(catalog.engine)
    key_id, key = keys.create("team")
    model = ServedModel("adult", 3, tmp_path, StubTableFamily(), {}, 1700000000)
    app = create_app(lambda: model, catalog, keys=keys, settings=ServeSettings(require_key=True))
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
    log = RequestLog(catalog.engine)
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
        create_app(lambda: model, catalog, keys=keys, settings=ServeSettings(require_key=True))
    ) as client:
        assert client.post("/v1/samples", json={"n": 1}, headers=auth).status_code == 401  # revoked
