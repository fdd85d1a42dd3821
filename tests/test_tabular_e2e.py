"""A table end to end, as a user drives it: ``genloom run`` -> the evaluation in the catalog ->
``genloom sample`` under a condition -> ``Pipeline.sample`` -> a second run of cache hits -> a
changed config that registers a new version and compares it with the champion, for both table
families; and a start/end date pair read from the CSV, kept in order by a rule."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from genloom.pipeline import Pipeline

runner = CliRunner()
FAMILIES = ["tabular_vae", "tabular_gan"]

ROWS = 1_500
# what the CSV source reads (int64, double, string) is the schema the samples must have
SCHEMA = {
    "customer_id": pa.int64(),
    "age": pa.int64(),
    "balance": pa.float64(),
    "color": pa.string(),
    "member": pa.string(),
}
DATES = {"start_date": pa.string(), "end_date": pa.string()}
QUALITY_METRICS = {"column_shapes", "column_pair_trends", "quality"}


def write_table(path: Path, dates: bool = False, rows: int = ROWS, seed: int = 0) -> None:
    """A customer table: an id, an integer, a skewed amount that depends on the colour, a
    three-level category, a true/false flag; with ``dates``, a start/end pair (end never before start)."""
    rng = np.random.default_rng(seed)
    colors = rng.choice(["red", "green", "blue"], size=rows, p=[0.3, 0.5, 0.2])
    age = rng.integers(18, 80, size=rows)
    balance = np.round(rng.lognormal(7.0 + (colors == "red"), 0.5), 2)
    member = rng.random(rows) < 0.2 + 0.008 * (age - 18)
    start = dt.date(2020, 1, 1) + rng.integers(0, 1_000, size=rows) * dt.timedelta(days=1)
    end = start + rng.integers(0, 400, size=rows) * dt.timedelta(days=1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*SCHEMA, *(DATES if dates else {})])
        for i in range(rows):
            row = [10_000 + i, int(age[i]), float(balance[i]), colors[i], "true" if member[i] else "false"]
            w.writerow(row + ([start[i].isoformat(), end[i].isoformat()] if dates else []))


def write_pipeline(folder: Path, model_type: str, epochs: int, dates: bool = False) -> Path:
    """The pipeline file of the project: the CSV, the model with its column specs (and the rule)."""
    columns: dict[str, Any] = {
        "customer_id": {"type": "id"},
        "age": {"min": 18},
        "member": {"type": "boolean"},
    }
    model: dict[str, Any] = {"type": model_type, "epochs": epochs, "batch_size": 100, "target": "color"}
    if dates:
        columns.update(start_date={"type": "datetime"}, end_date={"type": "datetime"})
        model["rules"] = ["end_date >= start_date"]
    cfg: dict[str, Any] = {
        "name": "customers",
        "store": {"path": ".genloom/artifacts"},
        "catalog": {"url": "sqlite:///.genloom/catalog.db"},
        "sources": [{"type": "csv", "paths": ["customers.csv"]}],
        "split": {"val_fraction": 0.2, "seed": 0},
        "train": {"model": {**model, "columns": columns}, "threads": 1},
        "evaluate": {"gates": {"quality": {"min": 0.3}}},
        "register": {"metric": "quality", "promote": "always"},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(path: Path, *extra: str) -> dict[str, Any]:
    """``genloom run``; the run's summary as the catalog recorded it (stages, model)."""
    res = runner.invoke(app, ["run", str(path), *extra])
    assert res.exit_code == 0, res.output
    pipe = Pipeline.from_file(path)
    try:
        last = pipe.catalog.runs("customers", limit=1)[0]
    finally:
        pipe.close()
    assert last["status"] == "succeeded", last
    return dict(last["summary"])


def stage(summary: dict[str, Any], name: str) -> dict[str, Any]:
    """One stage's result in a run summary."""
    return next(s for s in summary["stages"] if s["stage"] == name)


def check_rows(table: pa.Table, n: int, schema: dict[str, pa.DataType]) -> None:
    """The real schema, the id unique, the age constraint holds, the flag keeps its two values."""
    assert table.num_rows == n
    assert table.schema.names == list(schema)
    for name, typ in schema.items():
        assert table.schema.field(name).type == typ, name
    ids = table.column("customer_id")
    assert ids.null_count == 0 and len(pc.unique(ids)) == n
    assert pc.min(table.column("age")).as_py() >= 18
    assert set(table.column("member").drop_null().to_pylist()) <= {"true", "false"}


def sample_cli(path: Path, out: Path, *where: str) -> str:
    """``genloom sample -n 500 --seed 0 -o out`` with conditions; what it printed, on one line."""
    args = ["sample", str(path), "-n", "500", "--seed", "0", "-o", str(out)]
    res = runner.invoke(app, args + [a for w in where for a in ("--where", w)])
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())  # the console wraps long lines


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_table_from_csv_to_conditioned_samples_and_a_second_version(
    tmp_path: Path, model_type: str
) -> None:
    write_table(tmp_path / "customers.csv")
    path = write_pipeline(tmp_path, model_type, epochs=2)

    first = run(path)
    assert stage(first, "train")["status"] == "ran"
    assert first["model"]["version"] == 1 and first["model"]["stage"] == "champion"

    # the evaluation is in the catalog, every figure with its direction in the evaluate manifest
    pipe = Pipeline.from_file(path)
    try:
        champion = pipe.catalog.champion("customers")
        assert champion is not None and champion["version"] == 1
        metrics = champion["metrics"]
        for name in (*QUALITY_METRICS, "tstr_accuracy", "tstr_f1", "membership_auc", "val_loss"):
            assert isinstance(metrics[name], float), name
        assert all(0.0 <= metrics[m] <= 1.0 for m in QUALITY_METRICS)
        manifest = pipe.store.read_manifest("evaluate", stage(first, "evaluate")["key"])
        directions = manifest["directions"]
        assert {directions[m] for m in QUALITY_METRICS} == {"max"}
        assert directions["tstr_accuracy"] == "max" and directions["membership_auc"] == "min"
        assert manifest["gates"]["quality"]["passed"]

        # genloom sample: every row red, with the real schema and the rejections reported
        out = tmp_path / "out.parquet"
        said = sample_cli(path, out, "color=red")
        assert "wrote 500 rows" in said and '"condition: color=red":' in said
        table = pq.read_table(out)
        check_rows(table, 500, SCHEMA)
        assert set(table.column("color").to_pylist()) == {"red"}

        # the Python API: the same rows for the same seed, other conditions
        assert pipe.sample(500, {"color": "red"}, seed=0).equals(table)
        members = pipe.sample(300, {"member": "true"}, seed=1)
        check_rows(members, 300, SCHEMA)
        assert set(members.column("member").to_pylist()) == {"true"}
    finally:
        pipe.close()

    # nothing changed: every stage is a cache hit and no version is added
    second = run(path)
    assert all(s["status"] in ("cached", "skipped") for s in second["stages"] if s["stage"] != "register")
    assert stage(second, "register")["status"] == "cached"
    assert second["model"]["version"] == 1

    # more epochs: a new model, registered as version 2 and compared on quality with the champion
    path.write_text(path.read_text().replace("epochs: 2", "epochs: 3"))
    third = run(path, "--set", "register.promote=if_better")
    assert stage(third, "train")["status"] == "ran"
    model = third["model"]
    assert model["version"] == 2
    assert "quality" in model["decision"] and "champion v1" in model["decision"], model["decision"]
    assert model["stage"] == ("champion" if model["decision"].startswith("promoted") else "candidate")
    pipe = Pipeline.from_file(path)
    try:
        versions = {m["version"]: m["stage"] for m in pipe.catalog.models("customers")}
        assert versions == {1: "archived" if model["stage"] == "champion" else "champion", 2: model["stage"]}
    finally:
        pipe.close()


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_date_pair_from_csv_keeps_its_order_and_format(tmp_path: Path, model_type: str) -> None:
    write_table(tmp_path / "customers.csv", dates=True)
    path = write_pipeline(tmp_path, model_type, epochs=2, dates=True)
    run(path)
    out = tmp_path / "out.parquet"
    said = sample_cli(path, out, "color=red")
    assert "wrote 500 rows" in said
    table = pq.read_table(out)
    check_rows(table, 500, {**SCHEMA, **DATES})
    start = pc.strptime(table.column("start_date"), format="%Y-%m-%d", unit="s")
    end = pc.strptime(table.column("end_date"), format="%Y-%m-%d", unit="s")
    both = pc.and_(pc.is_valid(start), pc.is_valid(end))
    assert pc.all(pc.or_(pc.invert(both), pc.greater_equal(end, start))).as_py()
    assert pc.sum(both).as_py() > 400  # dates are generated, not left missing


def test_a_table_run_logs_json_progress(tmp_path: Path) -> None:
    """``--log-format json``: a table model's progress lines parse and carry the rows trained on."""
    import json

    write_table(tmp_path / "customers.csv")
    path = write_pipeline(tmp_path, "tabular_vae", epochs=2)
    res = runner.invoke(app, ["run", str(path), "--log-format", "json"])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    train = [e for e in events if e.get("event") == "progress" and e.get("stage") == "train"]
    assert train and all("rows_trained" in e and "rows_per_s" in e for e in train)
    assert events[-1]["text"] == "summary" and events[-1]["status"] == "succeeded"


@pytest.mark.parametrize("fmt", ["parquet", "xlsx", "sqlite"])
def test_a_table_from_parquet_excel_or_sql_samples_in_its_own_types(tmp_path: Path, fmt: str) -> None:
    """The data owner's Parquet file (read by the ``json`` source), Excel workbook (``excel``
    source, ``mode: table``) or database table (``sql`` source, SQLite here): the samples carry
    the column types the source read."""
    import pyarrow.csv as pacsv

    write_table(tmp_path / "customers.csv", rows=600)
    table = pacsv.read_csv(tmp_path / "customers.csv")
    assert table.schema.field("member").type == pa.bool_()  # Arrow reads true/false as bool
    if fmt == "parquet":
        pq.write_table(table, tmp_path / "customers.parquet")
        source: dict[str, Any] = {"type": "json", "paths": ["customers.parquet"]}
    elif fmt == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "customers.db") as db:
            db.execute(
                "CREATE TABLE customers (customer_id INTEGER, age INTEGER, balance REAL, color TEXT, member BOOLEAN)"
            )
            db.executemany(
                "INSERT INTO customers VALUES (?, ?, ?, ?, ?)", [tuple(r.values()) for r in table.to_pylist()]
            )
        source = {
            "type": "sql",
            "url": "sqlite:///customers.db",
            "table": "customers",
            "id_column": "customer_id",
        }
    else:
        import openpyxl

        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(table.column_names)
        for row in table.to_pylist():
            ws.append(list(row.values()))
        wb.save(str(tmp_path / "customers.xlsx"))
        source = {"type": "excel", "mode": "table", "paths": ["customers.xlsx"]}
    path = write_pipeline(tmp_path, "tabular_vae", epochs=1)
    cfg = yaml.safe_load(path.read_text())
    cfg["sources"] = [source]
    del cfg["train"]["model"]["columns"]["member"]  # a bool column is inferred boolean
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run(path)
    pipe = Pipeline.from_file(path)
    try:
        rows = pipe.sample(300, seed=0)
    finally:
        pipe.close()
    assert rows.schema.names == table.column_names
    for name in table.column_names:
        assert rows.schema.field(name).type == table.schema.field(name).type, name
    assert len(pc.unique(rows.column("customer_id"))) == 300
    assert set(rows.column("member").drop_null().to_pylist()) <= {True, False}
