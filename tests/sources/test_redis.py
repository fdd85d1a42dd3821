"""The redis source against the machine's Redis (127.0.0.1:6379, database 13): every test writes
under its own key prefix and deletes it afterwards; skipped with the reason when Redis is down."""

from __future__ import annotations

import json
import pickle
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from genloom.core.errors import ConfigError, SourceError
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline
from genloom.sources.redis import RedisSource

URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def r() -> Any:
    redis = pytest.importorskip("redis", reason="pip install 'genloom[redis]'")
    client = redis.Redis.from_url(URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as e:
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379 ({e})")
    yield client
    client.close()


@pytest.fixture
def prefix(r: Any) -> Any:
    p = f"gltest:{uuid.uuid4().hex[:10]}:"
    yield p
    keys = list(r.scan_iter(match=f"{p}*", count=1000))
    if keys:
        r.delete(*keys)


def _read(src: RedisSource) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    rows = pa.concat_tables(tables, promote_options="default").to_pylist() if tables else []
    return sorted(rows, key=lambda x: x["id"]), ctx.rejected


def test_hashes_json_and_strings_rows_read_equal_rows_written_with_types(r: Any, prefix: str) -> None:
    for i in range(250):
        r.hset(f"{prefix}user:{i:04d}", mapping={"name": f"n{i}", "age": 20 + i % 50, "score": i / 4})
    r.set(f"{prefix}doc:1", json.dumps({"title": "A", "n": 3, "tags": ["x", "y"], "ok": True}))
    r.set(f"{prefix}doc:2", json.dumps({"title": "B", "n": 4, "tags": [], "ok": False}))
    r.set(f"{prefix}note:1", "just text")
    users = RedisSource(url=URL, patterns=[f"{prefix}user:*"], scan_count=17, text_template="{name} ({age})")
    users.check("sources.0")
    rows, rejected = _read(users)
    assert rejected == [] and len(rows) == 250
    assert rows[3] == {
        **rows[3],
        "id": f"redis:{prefix}user:0003",
        "name": "n3",
        "age": 23,
        "score": 0.75,
        "text": "n3 (23)",
        "redis_type": "hash",
    }
    table = pa.Table.from_pylist(rows)
    assert table.schema.field("age").type == pa.int64() and table.schema.field("score").type == pa.float64()
    docs, rejected = _read(RedisSource(url=URL, patterns=[f"{prefix}doc:*", f"{prefix}note:*"]))
    assert rejected == []
    assert [(d["title"], d["n"], d["ok"], d["tags"]) for d in docs[:2]] == [
        ("A", 3, True, '["x", "y"]'),
        ("B", 4, False, "[]"),
    ]
    assert docs[2]["value"] == "just text" and docs[2]["text"] == "value: just text"
    raw, _ = _read(RedisSource(url=URL, patterns=[f"{prefix}doc:1"], value="string"))
    assert json.loads(raw[0]["value"])["title"] == "A"  # value: string keeps the text as it is


def test_declared_types_and_values_that_cannot_be_parsed_are_quarantined(r: Any, prefix: str) -> None:
    r.hset(f"{prefix}m:1", mapping={"t": "2024-03-01T10:00:00+01:00", "n": "7", "flag": "true"})
    r.hset(f"{prefix}m:2", mapping={"t": "not a time", "n": "8", "flag": "false"})
    r.set(f"{prefix}j:1", b'{"broken": ')
    r.set(f"{prefix}b:1", b"\xff\xfe binary")
    src = RedisSource(url=URL, patterns=[f"{prefix}m:*"], types={"t": "timestamp", "flag": "bool"})
    rows, rejected = _read(src)
    assert [(x["n"], x["flag"], x["t"]) for x in rows] == [(7, True, datetime(2024, 3, 1, 9, tzinfo=UTC))]
    assert [(x["id"], x["reason"]) for x in rejected] == [(f"redis:{prefix}m:2", "bad_value")]
    assert "field 't'" in rejected[0]["detail"]
    rows, rejected = _read(RedisSource(url=URL, patterns=[f"{prefix}j:*", f"{prefix}b:*"], value="json"))
    assert rows == [] and sorted(x["reason"] for x in rejected) == ["malformed_json", "not_utf8"]


def _entry_order(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(p) for p in row["entry_id"].split("-"))


def test_stream_rerun_reads_only_new_entries(r: Any, prefix: str) -> None:
    stream = f"{prefix}events"
    for i in range(120):
        r.xadd(stream, {"sensor": "a", "value": str(i)})
    src = RedisSource(url=URL, patterns=[f"{prefix}*"], value="stream", stream_page=25)
    rows, rejected = _read(src)
    assert rejected == [] and [x["value"] for x in sorted(rows, key=_entry_order)] == list(range(120))
    assert len(rows) == 120 and rows[0]["id"].startswith(f"redis:{stream}#")
    assert rows[0]["entry_time"].tzinfo is not None
    state = src.state()
    assert state is not None and list(state["streams"]) == [stream]
    for i in range(120, 150):
        r.xadd(stream, {"sensor": "a", "value": str(i)})
    again = RedisSource(url=URL, patterns=[f"{prefix}*"], value="stream", stream_page=25)
    again.restore_state(json.loads(json.dumps(state)))
    parts = again.partitions()
    old = {"stream": stream, "after": None, "upto": state["streams"][stream][0]}
    assert len(parts) == 2 and parts[0] == old  # the old segment (a cache hit) is unchanged
    ctx = StepContext()
    new = [row for t in again.run_partition(parts[1], ctx) for row in t.to_pylist()]
    assert sorted(x["value"] for x in new) == list(range(120, 150))


def _pipeline(folder: Path, source: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "redistest", "sources": [source]}, sort_keys=False))
    return path


def _ingest_shards(p: Pipeline) -> list[tuple[str, pa.Table]]:
    plan = next(x for x in p.plan() if x.stage == "ingest")
    manifest = p.store.read_manifest("ingest", plan.key)
    return [
        (k, pq.read_table(Path(p.store.shard_dir("ingest", k)) / "data.parquet")) for k in manifest["shards"]
    ]


def test_pipeline_keeps_the_stream_position_and_hashes_rerun_on_change(
    r: Any, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(40):
        r.xadd(f"{prefix}s", {"v": str(i)})
        r.hset(f"{prefix}h:{i}", mapping={"v": i})
    # the default user has no password: the server accepts any, so this one only shows it is never stored
    monkeypatch.setenv("GL_TEST_REDIS_URL", "redis://:Grep-me-77@127.0.0.1:6379/13")
    path = _pipeline(
        tmp_path / "proj", {"type": "redis", "url": "${env:GL_TEST_REDIS_URL}", "patterns": [f"{prefix}*"]}
    )
    p = Pipeline.from_file(path)
    assert p.run().stages[0].rows == 80
    first = dict(_ingest_shards(p))
    assert Pipeline.from_file(path).run().stages[0].status == "cached"
    for i in range(40, 45):
        r.xadd(f"{prefix}s", {"v": str(i)})
    p = Pipeline.from_file(path)
    assert p.run().stages[0].rows == 85
    shards = _ingest_shards(p)
    assert set(first) <= {k for k, _ in shards}  # the hashes and the first segment: cache hits
    (new,) = [t for k, t in shards if k not in first]
    assert sorted(new.column("v").to_pylist()) == list(range(40, 45))
    r.hset(f"{prefix}h:3", "v", 300)
    p = Pipeline.from_file(path)
    p.run()
    values = sorted(
        v for _, t in _ingest_shards(p) if "redis_type" in t.column_names for v in t.column("v").to_pylist()
    )
    assert 300 in values and len(values) == 85
    for f in (tmp_path / "proj").rglob("*"):
        if f.is_file():
            assert b"Grep-me-77" not in f.read_bytes(), f


def test_bad_password_is_a_source_error_without_the_password(r: Any) -> None:
    src = RedisSource(url="redis://gl_nobody:Hush-7sekret@127.0.0.1:6379/13", retries=2, retry_backoff_s=0)
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        src.partitions()
    message = str(err.value)
    assert "Hush-7sekret" not in message and "gl_nobody:***@127.0.0.1:6379" in message, message
    assert "AuthenticationError" in message and "retries" not in message  # refused: not retried
    assert time.monotonic() - start < 5
    assert "Hush-7sekret" not in repr(src)


def test_unreachable_server_fails_after_the_retries(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    src = RedisSource(url="redis://:pw-Zz9@127.0.0.1:6391/0", retries=2, retry_backoff_s=0.01, timeout_s=1)
    with pytest.raises(SourceError, match="after 2 retries") as err:
        list(src.read({"pattern": "*"}))
    assert "pw-Zz9" not in str(err.value)
    p = Pipeline.from_file(
        _pipeline(tmp_path / "proj", {"type": "redis", "url": "redis://127.0.0.1:6391/0", "retries": 0})
    )
    with pytest.raises(SourceError) as err:
        p.run()
    assert str(err.value).startswith("sources.0 (redis): redis://127.0.0.1:6391/0")


def _killer(name: str, stop: threading.Event, kills: list[int], limit: int) -> None:
    """Kill the connections named ``name`` (CLIENT KILL from a second connection) ``limit`` times."""
    import redis

    admin = redis.Redis.from_url(URL)
    try:
        while not stop.is_set() and len(kills) < limit:
            for c in admin.client_list():
                if c.get("name") == name and c["id"] not in kills:
                    kills.append(c["id"])  # before the kill: the reader may fail before it returns
                    admin.client_kill_filter(_id=c["id"])
            time.sleep(0.002)
    finally:
        admin.close()


def _fill_many(r: Any, prefix: str, n: int) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"{prefix}k:{i:05d}", mapping={"i": i, "s": "x" * 20})
    pipe.execute()


@pytest.mark.parametrize("retries", [3, 0])
def test_connection_killed_mid_read_completes_through_retry_or_fails_loudly(
    r: Any, prefix: str, retries: int, caplog: pytest.LogCaptureFixture
) -> None:
    _fill_many(r, prefix, 4000)
    name = f"gl-kill-{uuid.uuid4().hex[:8]}"
    src = RedisSource(
        url=URL,
        patterns=[f"{prefix}k:*"],
        scan_count=5,
        client_name=name,
        retries=retries,
        retry_backoff_s=0.01,
    )
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=_killer, args=(name, stop, kills, 2))
    killer.start()
    try:
        ctx = StepContext()
        if retries:
            rows = [x for t in src.run_partition({"pattern": f"{prefix}k:*"}, ctx) for x in t.to_pylist()]
            assert kills, "the connection was never killed: the test proved nothing"
            assert "retry 1/3" in caplog.text  # killed mid-read, not after it
            assert sorted(x["i"] for x in rows) == list(range(4000))  # all rows, none twice
        else:
            with pytest.raises(SourceError, match="ConnectionError"):
                list(src.run_partition({"pattern": f"{prefix}k:*"}, ctx))
            assert kills
    finally:
        stop.set()
        killer.join()


def test_a_stream_read_killed_mid_read_resumes_after_the_last_entry(
    r: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(6000):
        pipe.xadd(f"{prefix}big", {"i": str(i)})
    pipe.execute()
    name = f"gl-kill-{uuid.uuid4().hex[:8]}"
    src = RedisSource(
        url=URL,
        patterns=[f"{prefix}big"],
        value="stream",
        stream_page=10,
        client_name=name,
        retry_backoff_s=0.01,
    )
    (part,) = src.partitions()
    src._reset()
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=_killer, args=(name, stop, kills, 2))
    killer.start()
    try:
        rows = [x for t in src.run_partition(part, StepContext()) for x in t.to_pylist()]
    finally:
        stop.set()
        killer.join()
    assert kills and "retry 1/3" in caplog.text
    assert sorted(x["i"] for x in rows) == list(range(6000))


def test_lists_are_quarantined_as_unsupported_and_the_source_pickles(r: Any, prefix: str) -> None:
    r.rpush(f"{prefix}queue", "a", "b")
    r.hset(f"{prefix}h", mapping={"a": "1"})
    src = RedisSource(url=URL, patterns=[f"{prefix}*"])
    rows, rejected = _read(src)
    assert [x["redis_key"] for x in rows] == [f"{prefix}h"]
    assert [(x["reason"], x["id"]) for x in rejected] == [("unsupported_type", f"redis:{prefix}queue")]
    clone = pickle.loads(pickle.dumps(src))  # after a connection was opened
    assert _read(clone)[0] == rows


def test_config_errors_name_the_path() -> None:
    with pytest.raises(ConfigError) as e:
        RedisSource(url="http://127.0.0.1:6379").check("sources.2")
    assert e.value.path == "sources.2.url"
