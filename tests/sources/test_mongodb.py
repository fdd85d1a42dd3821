"""The mongodb source. No MongoDB server can be installed on this machine: the tests that need one
run only when GENLOOM_TEST_MONGODB_URL names a server (each uses its own collection and drops it);
the rest (BSON values to typed columns, an unreachable server, config errors) always run."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from genloom.core.errors import ConfigError, SourceError
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline
from genloom.sources.mongodb import MongodbSource

MONGO_URL = os.environ.get("GENLOOM_TEST_MONGODB_URL")
needs_server = pytest.mark.skipif(
    not MONGO_URL, reason="GENLOOM_TEST_MONGODB_URL is not set (no MongoDB server on this machine)"
)


def _read(src: MongodbSource) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    return (pa.concat_tables(tables).to_pylist() if tables else []), ctx.rejected


def test_bson_values_become_typed_columns() -> None:
    bson = pytest.importorskip("bson", reason="pip install 'genloom[mongodb]'")
    from bson.decimal128 import Decimal128

    oid = bson.ObjectId()
    src = MongodbSource(
        uri="mongodb://127.0.0.1:27017", database="db", collection="c", text_template="{name}/{n}"
    )
    docs = [
        {
            "_id": oid,
            "name": "a",
            "n": 1,
            "x": 1.5,
            "ok": True,
            "at": datetime(2024, 3, 1, 10, tzinfo=UTC),
            "price": Decimal128("12.50"),
            "tags": ["p", "q"],
            "sub": {"ref": oid},
            "text": "t",
        },
        {
            "_id": 7,
            "name": "b",
            "n": None,
            "x": 2,
            "ok": False,
            "at": None,
            "price": None,
            "tags": [],
            "sub": {},
        },
    ]
    (table,) = list(src.documents_table(docs))
    schema = table.schema
    assert schema.field("n").type == pa.int64() and schema.field("x").type == pa.float64()
    assert schema.field("ok").type == pa.bool_()
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    assert rows[0]["id"] == f"mongodb:db.c#{oid}" and rows[1]["id"] == "mongodb:db.c#7"
    assert rows[0]["price"] == "12.50" and json.loads(rows[0]["tags"]) == ["p", "q"]
    assert json.loads(rows[0]["sub"]) == {"ref": str(oid)}
    assert rows[0]["col_text"] == "t" and rows[0]["text"] == "a/1" and rows[1]["text"] == "b/"
    assert rows[1]["x"] == 2.0 and rows[1]["at"] is None


def test_unreachable_server_is_a_source_error_after_retries_without_the_password() -> None:
    pytest.importorskip("pymongo", reason="pip install 'genloom[mongodb]'")
    src = MongodbSource(
        uri="mongodb://gl:Mongo-pw-42@127.0.0.1:27999/?directConnection=true",
        database="db",
        collection="c",
        retries=1,
        retry_backoff_s=0.01,
        timeout_s=0.3,
    )
    with pytest.raises(SourceError, match="after 1 retries") as err:
        list(src.read(None))
    message = str(err.value)
    assert "Mongo-pw-42" not in message and "gl:***@127.0.0.1:27999" in message, message
    assert "ServerSelectionTimeoutError" in message


def test_id_is_always_in_the_projection() -> None:
    def projection(value: Any) -> Any:
        return MongodbSource(
            uri="mongodb://h", database="d", collection="c", projection=value
        ).find_projection()

    assert projection(None) is None
    assert projection(["title", "body"]) == {"title": 1, "body": 1, "_id": 1}
    assert projection({"title": 1, "_id": 0}) == {"title": 1, "_id": 1}
    assert projection({"secret": 0, "_id": 0}) == {"secret": 0}  # exclusions keep _id by default


def test_config_errors_name_the_path() -> None:
    with pytest.raises(ConfigError) as e:
        MongodbSource(uri="postgresql://x", database="d", collection="c").check("sources.1")
    assert e.value.path == "sources.1.uri"


# -- against a real server (GENLOOM_TEST_MONGODB_URL)


@pytest.fixture
def coll() -> Any:
    pymongo = pytest.importorskip("pymongo", reason="pip install 'genloom[mongodb]'")
    client = pymongo.MongoClient(MONGO_URL, serverSelectionTimeoutMS=3000, tz_aware=True)
    name = f"gl_{uuid.uuid4().hex[:10]}"
    collection = client["genloom_test"][name]
    yield collection
    collection.drop()
    client.close()


def _source(coll: Any, **kw: Any) -> MongodbSource:
    assert MONGO_URL is not None
    return MongodbSource(uri=MONGO_URL, database=coll.database.name, collection=coll.name, **kw)


@needs_server
def test_rows_read_equal_rows_written_with_types_filter_and_projection(coll: Any) -> None:
    docs = [
        {
            "_id": i,
            "name": f"n{i}",
            "n": i,
            "score": i / 4,
            "at": datetime(2024, 1, 1 + i % 28, tzinfo=UTC),
            "price": Decimal(f"{i}.25"),
            "nested": {"k": i},
        }
        for i in range(1, 2501)
    ]
    from bson.decimal128 import Decimal128

    coll.insert_many([{**d, "price": Decimal128(d["price"])} for d in docs])
    rows, rejected = _read(_source(coll, batch_size=300))
    assert rejected == [] and len(rows) == 2500
    assert [r["n"] for r in rows] == list(range(1, 2501))  # _id order
    first = rows[0]
    assert first["score"] == 0.25 and first["at"] == datetime(2024, 1, 2, tzinfo=UTC)
    assert first["price"] == "1.25" and json.loads(first["nested"]) == {"k": 1}
    few, _ = _read(_source(coll, filter={"n": {"$lte": 3}}, projection=["name"]))
    assert [(r["name"], "n" in r) for r in few] == [("n1", False), ("n2", False), ("n3", False)]


def _pipeline(folder: Path, source: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "mongotest", "sources": [source]}, sort_keys=False))
    return path


def _ingest_shards(p: Pipeline) -> list[tuple[str, pa.Table]]:
    plan = next(x for x in p.plan() if x.stage == "ingest")
    manifest = p.store.read_manifest("ingest", plan.key)
    return [
        (k, pq.read_table(Path(p.store.shard_dir("ingest", k)) / "data.parquet")) for k in manifest["shards"]
    ]


@needs_server
def test_incremental_pipeline_reads_only_new_documents(
    coll: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll.insert_many([{"_id": i, "v": i, "seq": i} for i in range(100)])
    assert MONGO_URL is not None
    monkeypatch.setenv("GL_TEST_MONGO_URL", MONGO_URL)
    source = {
        "type": "mongodb",
        "uri": "${env:GL_TEST_MONGO_URL}",
        "database": coll.database.name,
        "collection": coll.name,
        "incremental": {"field": "seq"},
    }
    path = _pipeline(tmp_path / "proj", source)
    p = Pipeline.from_file(path)
    assert p.run().stages[0].rows == 100
    ((k1, _),) = _ingest_shards(p)
    coll.insert_many([{"_id": i, "v": i, "seq": i} for i in range(100, 130)])
    p = Pipeline.from_file(path)
    assert p.run().stages[0].rows == 130
    shards = _ingest_shards(p)
    assert shards[0][0] == k1 and sorted(shards[1][1].column("v").to_pylist()) == list(range(100, 130))
    assert Pipeline.from_file(path).run().stages[0].status == "cached"


@needs_server
def test_bad_password_is_a_source_error_without_the_password(coll: Any) -> None:
    from urllib.parse import urlsplit, urlunsplit

    assert MONGO_URL is not None
    parts = urlsplit(MONGO_URL)
    host = parts.netloc.rpartition("@")[2]
    bad = urlunsplit((parts.scheme, f"gl_nobody:Wr0ng-pw-9@{host}", parts.path or "/", parts.query, ""))
    src = MongodbSource(
        uri=bad, database=coll.database.name, collection=coll.name, retries=2, retry_backoff_s=0
    )
    with pytest.raises(SourceError) as err:
        list(src.read(None))
    assert "Wr0ng-pw-9" not in str(err.value) and "retries" not in str(err.value)  # refused: not retried
