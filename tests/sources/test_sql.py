"""The sql source against real databases: a SQLite file made here, and the machine's PostgreSQL and
MariaDB (tables created and filled by each test; skipped with the reason when a server is down)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from datetime import UTC, date, datetime
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
from genloom.sources.sql import SqlSource

PG = "postgresql://postgres@127.0.0.1:5432/test"
MY = "mysql+pymysql://root@127.0.0.1:3306/test"


def _read(src: SqlSource, partition: Any = None) -> tuple[pa.Table, StepContext]:
    ctx = StepContext()
    tables = list(src.run_partition(partition, ctx))
    return (pa.concat_tables(tables) if tables else pa.table({})), ctx


def _read_all(src: SqlSource) -> pa.Table:
    tables = [_read(src, p)[0] for p in src.partitions()]
    return pa.concat_tables([t for t in tables if t.num_rows])


@pytest.fixture
def pg() -> Any:
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("adbc_driver_postgresql", reason="pip install 'genloom[sql]'")
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({e})")
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def my() -> Any:
    pymysql = pytest.importorskip("pymysql", reason="pip install 'genloom[sql]'")
    try:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=3)
    except pymysql.err.OperationalError as e:
        pytest.skip(f"MariaDB is not reachable on 127.0.0.1:3306 ({e})")
    conn.autocommit(True)
    yield conn
    conn.close()


def _table_name() -> str:
    return f"gl_{uuid.uuid4().hex[:10]}"


# -- SQLite


def _sqlite_db(path: Path) -> None:
    c = sqlite3.connect(path)
    c.executescript(
        """
        CREATE TABLE tickets (id INTEGER PRIMARY KEY, subject TEXT, body TEXT, price DECIMAL(10,2),
                              opened TIMESTAMP, due DATE, urgent BOOLEAN, extra JSON, score REAL);
        INSERT INTO tickets VALUES
          (1, 'Login', 'cannot log in', 12.50, '2024-03-01 10:00:00', '2024-03-05', 1, '{"tags": ["a"]}', 0.5),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (3, 'Bill', 'charged twice', 99.99, '2024-03-02 11:30:15.250', '2024-03-09', 0, '[1, 2]', 1.25);
        """
    )
    c.commit()
    c.close()


def test_sqlite_rows_and_types_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _sqlite_db(db)
    src = SqlSource(url=f"sqlite:///{db}", table="tickets", id_column="id", text_template="{subject}: {body}")
    src.check("sources.0")
    table, ctx = _read(src)
    assert ctx.rejected == []
    assert table.column("id").to_pylist() == ["sql:tickets#id=1", "sql:tickets#id=2", "sql:tickets#id=3"]
    assert table.column("text").to_pylist()[0] == "Login: cannot log in"
    schema = table.schema
    assert schema.field("price").type == pa.decimal128(10, 2)
    assert schema.field("opened").type == pa.timestamp("us")
    assert schema.field("due").type == pa.date32()
    assert schema.field("urgent").type == pa.bool_()
    assert schema.field("extra").type == pa.string()
    rows = table.to_pylist()
    assert rows[0]["price"] == Decimal("12.50")
    assert rows[2]["opened"] == datetime(2024, 3, 2, 11, 30, 15, 250000)
    assert rows[0]["due"] == date(2024, 3, 5)
    assert json.loads(rows[0]["extra"]) == {"tags": ["a"]}
    assert rows[1]["subject"] is None and rows[1]["price"] is None and rows[1]["urgent"] is None
    assert json.loads(rows[0]["meta"]) == {"dialect": "sqlite", "table": "tickets"}


def test_sqlite_value_that_does_not_convert_quarantines_its_row(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _sqlite_db(db)
    c = sqlite3.connect(db)
    c.execute("INSERT INTO tickets (id, subject, opened) VALUES (4, 'x', 'soon')")
    c.commit()
    c.close()
    src = SqlSource(url=f"sqlite:///{db}", table="tickets", id_column="id", chunk_rows=2)
    table, ctx = _read(src)
    assert table.column("col_id").to_pylist() == [1, 2, 3]
    assert [(r["id"], r["reason"]) for r in ctx.rejected] == [("sql:tickets#id=4", "unconvertible_value")]
    assert "opened" in ctx.rejected[0]["detail"]


def test_sqlite_is_opened_read_only_and_query_params_are_bound(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _sqlite_db(db)
    before = db.read_bytes()
    hostile = "x'; DROP TABLE tickets; --"
    src = SqlSource(
        url=f"sqlite:///{db}",
        query="SELECT id, subject FROM tickets WHERE subject = :s OR id >= :n",
        params={"s": hostile, "n": 3},
        id_column="id",
    )
    src.check("sources.0")
    table, _ = _read(src)
    assert table.column("col_id").to_pylist() == [3]
    assert db.read_bytes() == before
    with pytest.raises(ConfigError, match="no value"):
        SqlSource(url=f"sqlite:///{db}", query="SELECT * FROM tickets WHERE id = :n").check("sources.0")


def test_rows_without_id_column_get_stable_hash_ids(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    c = sqlite3.connect(db)
    c.executescript("CREATE TABLE t (a TEXT, b INT); INSERT INTO t VALUES ('x', 1), ('x', 1), ('y', 2);")
    c.close()
    src = SqlSource(url=f"sqlite:///{db}", table="t")
    first = _read(src)[0].column("id").to_pylist()
    assert len(set(first)) == 3 and first[1] == first[0] + "~2"
    assert _read(src)[0].column("id").to_pylist() == first


def test_fingerprint_changes_with_any_row_change(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _sqlite_db(db)
    src = SqlSource(url=f"sqlite:///{db}", table="tickets", id_column="id")
    before = src.partition_fingerprint(None)
    assert src.partition_fingerprint(None) == before
    c = sqlite3.connect(db)
    c.execute("UPDATE tickets SET body = 'changed' WHERE id = 3")
    c.commit()
    c.close()
    assert src.partition_fingerprint(None) != before


# -- PostgreSQL


def test_postgres_fingerprint_sees_updates_and_types_without_a_hash(pg: Any) -> None:
    name = _table_name()
    pg.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, doc json, body text)")
    try:
        pg.execute(
            f"INSERT INTO {name} SELECT g, json_build_object('g', g), 'b' || g FROM generate_series(1, 50) g"
        )
        checksum = SqlSource(url=PG, table=name, id_column="id")
        rows = SqlSource(url=PG, table=name, id_column="id", fingerprint_mode="rows")
        before = (checksum.partition_fingerprint(None), rows.partition_fingerprint(None))
        assert before[1] == "rows=50:max=50"
        pg.execute(f"UPDATE {name} SET body = 'changed' WHERE id = 3")
        after = (checksum.partition_fingerprint(None), rows.partition_fingerprint(None))
        assert after[0] != before[0]  # json has no hash function: the row-as-text checksum
        assert after[1] == before[1]  # documented: the cheap mode misses an update in place
    finally:
        pg.execute(f"DROP TABLE {name}")


def _pg_fill(pg: Any, name: str, n: int, start: int = 1) -> None:
    pg.execute(
        f"""INSERT INTO {name} (id, subject, amount, created, updated_at, doc, flag, ratio)
        SELECT g, 'ticket ' || g, (g * 1.25)::numeric(12, 2), date '2024-01-01' + mod(g, 300),
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
               jsonb_build_object('n', g, 'tags', jsonb_build_array('a', mod(g, 3))),
               mod(g, 2) = 0, CASE WHEN mod(g, 10) = 0 THEN NULL ELSE g / 7.0 END
        FROM generate_series(%s::int, %s::int) g""",
        (start, start + n - 1),
    )


@pytest.fixture
def pg_table(pg: Any) -> Any:
    name = _table_name()
    pg.execute(
        f"""CREATE TABLE {name} (id int PRIMARY KEY, subject text, amount numeric(12, 2), created date,
        updated_at timestamptz, doc jsonb, flag boolean, ratio double precision)"""
    )
    yield name
    pg.execute(f"DROP TABLE IF EXISTS {name}")


def test_postgres_rows_read_equal_rows_written_with_types(pg: Any, pg_table: str) -> None:
    _pg_fill(pg, pg_table, 1000)
    pg.execute(f"INSERT INTO {pg_table} (id) VALUES (5000)")  # a row of NULLs
    src = SqlSource(url=PG, table=pg_table, id_column="id", text_column="subject", chunk_rows=128)
    table, ctx = _read(src)
    assert ctx.rejected == []
    assert table.num_rows == 1001
    assert max(b for b in [len(t) for t in src.run_partition(None, StepContext())]) <= 128
    s = table.schema
    assert s.field("amount").type == pa.decimal128(12, 2)
    assert s.field("created").type == pa.date32()
    assert s.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert s.field("flag").type == pa.bool_()
    assert s.field("doc").type == pa.string()
    rows = {r["col_id"]: r for r in table.to_pylist()}
    assert rows[8]["amount"] == Decimal("10.00")
    assert rows[8]["updated_at"] == datetime(2024, 1, 1, 0, 8, tzinfo=UTC)
    assert json.loads(rows[8]["doc"]) == {"n": 8, "tags": ["a", 2]}
    assert rows[10]["ratio"] is None and rows[11]["ratio"] == pytest.approx(11 / 7)
    assert all(
        v is None for k, v in rows[5000].items() if k not in ("id", "source", "meta", "col_id", "text")
    )
    # the SQLAlchemy server-side cursor path reads the same rows with the same types
    other, _ = _read(
        SqlSource(url=PG, table=pg_table, id_column="id", text_column="subject", driver="sqlalchemy")
    )
    assert other.schema == table.schema
    assert other.to_pylist() == table.to_pylist()


def test_postgres_query_with_bound_params(pg: Any, pg_table: str) -> None:
    _pg_fill(pg, pg_table, 200)
    src = SqlSource(
        url=PG,
        query=f"SELECT id, subject FROM {pg_table} WHERE id > :lo AND subject <> :s AND doc->>'n' <> '3' "
        "AND id::text <> ':nope' /* :nor_this */",
        params={"lo": 150, "s": "ticket 160'; DELETE FROM x; --"},
        id_column="id",
        label="tickets",
    )
    src.check("sources.0")
    table, _ = _read(src)
    assert table.column("col_id").to_pylist() == list(range(151, 201))
    assert table.column("id")[0].as_py() == "sql:tickets#id=151"


def test_postgres_reads_in_a_read_only_transaction(pg: Any, pg_table: str) -> None:
    src = SqlSource(url=PG, query=f"INSERT INTO {pg_table} (id) VALUES (1) RETURNING id")
    with pytest.raises(SourceError, match="read-only transaction"):
        _read(src)
    assert pg.execute(f"SELECT count(*) FROM {pg_table}").fetchone()[0] == 0


def test_postgres_partitions_by_key_range(pg: Any, pg_table: str) -> None:
    _pg_fill(pg, pg_table, 1000)
    pg.execute(f"INSERT INTO {pg_table} (id) VALUES (-5)")
    src = SqlSource(url=PG, table=pg_table, id_column="id", partition={"column": "id", "count": 4})
    parts = src.partitions()
    assert len(parts) == 4
    ids = [r for p in parts for r in _read(src, p)[0].column("col_id").to_pylist()]
    assert sorted(ids) == [-5, *range(1, 1001)]


def test_postgres_killed_connection_mid_read_retries_without_losing_rows(
    pg: Any, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    n = 200_000
    _pg_fill(pg, pg_table, n)
    pg.execute(f"UPDATE {pg_table} SET subject = repeat('x', 300) || id")
    src = SqlSource(url=PG, table=pg_table, id_column="id", chunk_rows=500, retry_backoff_s=0.1)
    ctx = StepContext()
    ids: list[int] = []
    killed = []
    with caplog.at_level(logging.WARNING, logger="genloom.sources.sql"):
        for i, batch in enumerate(src.run_partition(None, ctx)):
            ids.extend(batch.column("col_id").to_pylist())
            if i == 2:
                killed = pg.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'genloom' AND pid <> pg_backend_pid()"
                ).fetchall()
    assert killed and all(k[0] for k in killed)
    assert sorted(ids) == list(range(1, n + 1))  # complete, no row twice
    assert len(ids) == n
    retries = [r.getMessage() for r in caplog.records if "retry 1/3" in r.getMessage()]
    assert retries and "rows; retry 1/3" in retries[0], caplog.text


def test_postgres_unreachable_raises_source_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "hunter2-Pa55"
    src = SqlSource(
        url=f"postgresql://postgres:{secret}@127.0.0.1:5999/test", table="t", retries=1, retry_backoff_s=0.05
    )
    with pytest.raises(SourceError) as err:
        src.partition_fingerprint(None)  # what the plan asks before any read
    assert secret not in str(err.value)
    assert "***" in str(err.value) and "after 1 retries" in str(err.value)
    with pytest.raises(SourceError) as err:
        _read(src)
    assert secret not in str(err.value)
    assert "127.0.0.1:5999" in str(err.value)


def test_pipeline_with_an_unreachable_server_fails_naming_the_source(tmp_path: Path) -> None:
    source = {
        "type": "sql",
        "url": "postgresql://u:Zz9-secret@127.0.0.1:5999/test",
        "table": "t",
        "retries": 0,
    }
    p = Pipeline.from_file(_pipeline(tmp_path / "proj", source))
    with pytest.raises(SourceError) as err:
        p.run()
    message = str(err.value)
    assert message.startswith("sources.0 (sql): postgresql://u:***@127.0.0.1:5999/test"), message
    assert "Zz9-secret" not in message
    assert "Zz9-secret" not in repr(p.cfg.sources[0])


def _pipeline(folder: Path, source: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "sqltest", "sources": [source]}, sort_keys=False))
    return path


def _ingest_shards(p: Pipeline) -> list[tuple[str, pa.Table]]:
    plan = next(x for x in p.plan() if x.stage == "ingest")
    manifest = p.store.read_manifest("ingest", plan.key)
    return [
        (k, pq.read_table(Path(p.store.shard_dir("ingest", k)) / "data.parquet")) for k in manifest["shards"]
    ]


def test_incremental_pipeline_reads_only_new_and_changed_rows(
    pg: Any, pg_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_fill(pg, pg_table, 300)
    monkeypatch.setenv("GL_TEST_PG_PASSWORD", "pw-not-needed-9")
    source = {
        "type": "sql",
        "url": "postgresql://postgres:${env:GL_TEST_PG_PASSWORD}@127.0.0.1:5432/test",
        "table": pg_table,
        "id_column": "id",
        "text_column": "subject",
        "incremental": {"column": "updated_at"},
    }
    path = _pipeline(tmp_path / "proj", source)
    p = Pipeline.from_file(path)
    first = p.run()
    assert first.stages[0].rows == 300
    ((k1, t1),) = _ingest_shards(p)
    assert t1.num_rows == 300
    # new rows: one new shard holds only them, the old shard is a cache hit
    _pg_fill(pg, pg_table, 50, start=301)
    p = Pipeline.from_file(path)
    second = p.run()
    shards = _ingest_shards(p)
    assert [k for k, _ in shards][0] == k1
    assert shards[1][1].column("col_id").to_pylist() == list(range(301, 351))
    assert second.stages[0].rows == 350
    # nothing new: every stage cached
    assert Pipeline.from_file(path).run().stages[0].status == "cached"
    # a changed row moves past the watermark: its old segment is read again, no id twice
    pg.execute(f"UPDATE {pg_table} SET subject = 'changed', updated_at = now() WHERE id = 7")
    p = Pipeline.from_file(path)
    p.run()
    shards = _ingest_shards(p)
    assert k1 not in [k for k, _ in shards]
    ids = [i for _, t in shards for i in t.column("col_id").to_pylist()]
    assert sorted(ids) == list(range(1, 351))
    assert shards[-1][1].column("text").to_pylist() == ["changed"]
    # the password is nowhere in the store or the catalog
    for f in (tmp_path / "proj").rglob("*"):
        if f.is_file():
            assert b"pw-not-needed-9" not in f.read_bytes(), f


# -- MariaDB


@pytest.fixture
def my_table(my: Any) -> Any:
    name = _table_name()
    with my.cursor() as c:
        c.execute(
            f"""CREATE TABLE {name} (id INT PRIMARY KEY, subject VARCHAR(100), amount DECIMAL(12, 2),
            created DATE, updated_at DATETIME(6), doc JSON, flag BOOLEAN, ratio DOUBLE, data BLOB)"""
        )
    yield name
    with my.cursor() as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


def test_mariadb_rows_read_equal_rows_written_with_types(my: Any, my_table: str) -> None:
    rows = [
        (
            i,
            f"ticket {i}",
            Decimal(i) / 4,
            date(2024, 1, 1 + i % 28),
            datetime(2024, 2, 1, 12, 0, i % 60, 500),
            json.dumps({"n": i}),
            i % 2 == 0,
            None if i % 10 == 0 else i / 7,
            bytes([i % 256, 1]),
        )
        for i in range(1, 501)
    ]
    with my.cursor() as c:
        c.executemany(f"INSERT INTO {my_table} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        c.execute(f"INSERT INTO {my_table} (id) VALUES (9999)")
    src = SqlSource(url=MY, table=my_table, id_column="id", text_column="subject", chunk_rows=64)
    table, ctx = _read(src)
    assert ctx.rejected == []
    assert table.num_rows == 501
    s = table.schema
    assert s.field("amount").type == pa.decimal128(12, 2)
    assert s.field("created").type == pa.date32()
    assert s.field("updated_at").type == pa.timestamp("us")
    assert s.field("flag").type == pa.bool_()
    assert s.field("doc").type == pa.string()
    assert s.field("data").type == pa.binary()
    got = {r["col_id"]: r for r in table.to_pylist()}
    for i, subject, amount, created, updated, doc, flag, ratio, data in rows:
        r = got[i]
        assert (r["subject"], r["amount"], r["created"], r["updated_at"]) == (
            subject,
            amount.quantize(Decimal("0.01")),
            created,
            updated,
        )
        assert json.loads(r["doc"]) == json.loads(doc) and r["flag"] is flag and r["data"] == data
        assert r["ratio"] == (None if ratio is None else pytest.approx(ratio))
    assert got[9999]["amount"] is None and got[9999]["doc"] is None


def test_mariadb_bound_params_and_incremental_partitions(my: Any, my_table: str) -> None:
    with my.cursor() as c:
        c.executemany(
            f"INSERT INTO {my_table} (id, subject) VALUES (%s, %s)", [(i, f"s{i}") for i in range(1, 101)]
        )
    src = SqlSource(
        url=MY,
        query=f"SELECT id, subject FROM {my_table} WHERE id <= :top AND subject <> :s",
        params={"top": 60, "s": "s5' OR '1'='1"},
        id_column="id",
        incremental={"column": "id"},
    )
    parts = src.partitions()
    assert _read_all(src).column("col_id").to_pylist() == list(range(1, 61))
    src2 = SqlSource(**{**src.model_dump(), "url": src.url, "params": {"top": 80, "s": "x"}})
    src2.restore_state(src.state())
    parts2 = src2.partitions()
    assert parts2[0] == parts[0] and len(parts2) == 2
    assert _read(src2, parts2[1])[0].column("col_id").to_pylist() == list(range(61, 81))


def test_mariadb_bad_password_is_a_source_error_without_the_password(
    my: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user, secret = f"gl_{uuid.uuid4().hex[:8]}", "Right-Pa55word"
    with my.cursor() as c:
        c.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
        c.execute(f"GRANT SELECT ON test.* TO '{user}'@'%'")
    try:
        wrong = "Wr0ng-Pa55word"
        src = SqlSource(
            url=f"mysql+pymysql://{user}:{wrong}@127.0.0.1:3306/test",
            table="nope",
            retries=1,
            retry_backoff_s=0.05,
        )
        for call in (lambda: src.partition_fingerprint(None), lambda: _read(src)):
            with (
                caplog.at_level(logging.WARNING, logger="genloom.sources.sql"),
                pytest.raises(SourceError) as err,
            ):
                call()
            assert wrong not in str(err.value) and "Access denied" in str(err.value)
        assert "retry 1/1" in caplog.text and wrong not in caplog.text
        ok = SqlSource(url=f"mysql+pymysql://{user}:{secret}@127.0.0.1:3306/test", query="SELECT 1 AS one")
        assert _read(ok)[0].column("one").to_pylist() == [1]
    finally:
        with my.cursor() as c:
            c.execute(f"DROP USER '{user}'@'%'")


def test_mariadb_killed_connection_mid_read_completes_or_fails_loudly(
    my: Any, my_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    n = 100_000
    with my.cursor() as c:
        c.executemany(
            f"INSERT INTO {my_table} (id, subject) VALUES (%s, %s)", [(i, "y" * 95) for i in range(1, n + 1)]
        )
    src = SqlSource(url=MY, table=my_table, id_column="id", chunk_rows=200, retry_backoff_s=0.1)
    ids: list[int] = []
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        with my.cursor() as c:
            while not stop.is_set():
                c.execute(
                    "SELECT id FROM information_schema.processlist WHERE info LIKE %s AND id <> connection_id()",
                    (f"%{my_table}%ORDER BY%",),
                )
                found = c.fetchall()
                if found and len(ids) > 1000:
                    c.execute(f"KILL {found[0][0]}")
                    killed.append(found[0][0])
                    return
                time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="genloom.sources.sql"):
            for batch in src.run_partition(None, StepContext()):
                ids.extend(batch.column("col_id").to_pylist())
                time.sleep(0.001)  # a slow consumer: the server is still sending when the kill lands
    except SourceError as e:
        assert killed and "after" in str(e)
        return
    finally:
        stop.set()
        thread.join()
    assert killed, "the reading connection was never found to kill"
    assert sorted(ids) == list(range(1, n + 1))  # complete through the retry, no row twice
    assert any("retry 1/3" in r.getMessage() for r in caplog.records), caplog.text
