"""SQL ingestion: genloom's ``sql`` source vs ``pandas.read_sql`` (chunked) vs ConnectorX, in one run.

A table of mixed types (bigint key, int, numeric(12,2), double with NULLs, timestamptz, date,
boolean, a low-cardinality text, an 80-character text, jsonb) is created in the machine's
PostgreSQL and filled server-side, then each reader copies it to a Parquet file (zstd) in its own
child process, so peak memory (ru_maxrss) is its own:

- genloom: ``SqlSource`` (ADBC, ``COPY`` in binary) streamed batch by batch into a ParquetWriter;
  the plan's fingerprint query (row count and checksum, run by the server) is timed apart;
- pandas: ``pandas.read_sql`` over SQLAlchemy + psycopg2 with ``chunksize``, each chunk converted
  to Arrow and appended to a ParquetWriter;
- ConnectorX: ``connectorx.read_sql(..., return_type="arrow")`` (one partition), then one
  ``pq.write_table``.

    python benchmarks/ingest_sql.py                 # 1,000,000 rows
    python benchmarks/ingest_sql.py --quick         # 100,000 rows

pandas and ConnectorX run in ``--reference-python`` (default ``.venv-bench/bin/python``; install
there ``pip install pandas sqlalchemy psycopg2-binary connectorx pyarrow``). Timings never decide a
test. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("GENLOOM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "gl_bench_ingest_sql"
CHUNK = 100_000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# children: copy the table to Parquet, print one JSON line


def child_genloom(out: str) -> dict:
    """genloom's sql source, batch by batch into a ParquetWriter."""
    import pyarrow.parquet as pq

    from genloom.core.steps import StepContext
    from genloom.sources.sql import SqlSource

    src = SqlSource(url=PG_URL, table=TABLE, id_column="id", text_column="body", chunk_rows=CHUNK)
    t0 = time.perf_counter()
    fingerprint = src.partition_fingerprint(None)
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = 0
    writer = None
    for table in src.run_partition(None, StepContext()):
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema, compression="zstd")
        writer.write_table(table)
        rows += table.num_rows
    if writer is not None:
        writer.close()
    return {"rows": rows, "seconds": time.perf_counter() - t0, "plan_s": plan_s, "fingerprint": fingerprint}


def child_pandas(out: str) -> dict:
    """pandas.read_sql with chunks over SQLAlchemy + psycopg2."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg2://"))
    t0 = time.perf_counter()
    rows = 0
    writer = None
    with engine.connect().execution_options(stream_results=True) as conn:
        for chunk in pd.read_sql(f"SELECT * FROM {TABLE} ORDER BY id", conn, chunksize=CHUNK):
            chunk["doc"] = chunk["doc"].map(json.dumps)  # psycopg2 parses jsonb into dicts
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(out, schema, compression="zstd")
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    if writer is not None:
        writer.close()
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def child_connectorx(out: str) -> dict:
    """ConnectorX straight to Arrow, one partition, then one Parquet write."""
    import connectorx as cx
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = cx.read_sql(PG_URL, f"SELECT * FROM {TABLE} ORDER BY id", return_type="arrow")
    pq.write_table(table, out, compression="zstd")
    return {"rows": table.num_rows, "seconds": time.perf_counter() - t0}


CHILDREN = {"genloom": child_genloom, "pandas": child_pandas, "connectorx": child_connectorx}


# ---------------------------------------------------------------------------------------------
# parent


def fill(rows: int) -> None:
    """Create and fill the table server-side (generate_series), then ANALYZE it."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {TABLE}")
        c.execute(
            f"""CREATE TABLE {TABLE} (id bigint PRIMARY KEY, user_id int, amount numeric(12, 2),
            score double precision, created timestamptz, day date, flag boolean, category text,
            body text, doc jsonb)"""
        )
        c.execute(
            f"""INSERT INTO {TABLE}
            SELECT g, mod(g * 7919, 100000), (mod(g * 31, 1000000) / 100.0)::numeric(12, 2),
                   CASE WHEN mod(g, 17) = 0 THEN NULL ELSE sqrt(g) END,
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
                   date '2020-01-01' + mod(g, 2000)::int, mod(g, 3) = 0,
                   (ARRAY['billing', 'login', 'shipping', 'refund', 'other'])[1 + mod(g, 5)],
                   'ticket ' || g || ': ' || md5(g::text) || ' ' || md5((g * 3)::text),
                   jsonb_build_object('n', g, 'tags', jsonb_build_array('a', mod(g, 7)))
            FROM generate_series(1, %s::bigint) g""",
            (rows,),
        )
        c.execute(f"ANALYZE {TABLE}")


def run_child(python: str, name: str, out: str) -> dict:
    """Run one reader in its own process; its JSON line plus its peak memory."""
    cmd = [python, str(Path(__file__).resolve()), "--child", name, "--out", out]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        return {"error": (res.stderr or res.stdout).strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--reference-python", default=str(REPO / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--keep", action="store_true", help="keep the table afterwards")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = CHILDREN[args.child](args.out)
        result["peak_mb"] = round(_peak_mb(), 1)
        result["parquet_mb"] = round(os.path.getsize(args.out) / 2**20, 1)
        print(json.dumps(result))
        return

    rows = args.rows or (100_000 if args.quick else 1_000_000)
    ref = args.reference_python if Path(args.reference_python).exists() else sys.executable
    t0 = time.perf_counter()
    fill(rows)
    print(f"filled {TABLE} with {rows:,} rows in {time.perf_counter() - t0:.1f}s", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, python in (("genloom", sys.executable), ("pandas", ref), ("connectorx", ref)):
            r = run_child(python, name, os.path.join(tmp, f"{name}.parquet"))
            if "seconds" in r:
                r["rows_per_s"] = round(r["rows"] / r["seconds"])
                r["seconds"] = round(r["seconds"], 2)
                print(
                    f"{name:>10}: {r['rows']:,} rows in {r['seconds']:.2f}s = {r['rows_per_s']:,} rows/s, "
                    f"peak {r['peak_mb']:.0f} MB, Parquet {r['parquet_mb']} MB",
                    flush=True,
                )
            else:
                print(f"{name:>10}: failed: {r.get('error')}", flush=True)
            results[name] = r
    if not args.keep:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {TABLE}")

    g, p, x = (results[k] for k in ("genloom", "pandas", "connectorx"))
    summary: dict = {"benchmark": "ingest_sql", "rows": rows, "results": results}
    if "seconds" in g and "seconds" in p:
        summary["speed_vs_pandas"] = round(p["seconds"] / g["seconds"], 2)
        summary["peak_memory_vs_pandas"] = round(g["peak_mb"] / p["peak_mb"], 2)
    if "seconds" in g and "seconds" in x:
        summary["time_vs_connectorx"] = round(g["seconds"] / x["seconds"], 2)
        summary["peak_memory_vs_connectorx"] = round(g["peak_mb"] / x["peak_mb"], 2)
    summary["command"] = "python benchmarks/ingest_sql.py" + (" --quick" if args.quick else "")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
