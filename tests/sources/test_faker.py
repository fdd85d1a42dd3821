"""The faker source: seeded, typed rows; a locale per field; config errors before any work."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from genloom.core.errors import ConfigError
from genloom.core.records import load_meta
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline

pytest.importorskip("faker", reason="pip install 'genloom[faker]'")

from genloom.sources.faker import FakerSource  # noqa: E402

FIELDS: dict[str, Any] = {
    "name": "name",
    "email": {"provider": "email"},
    "signup": {"date_between": {"start_date": "2024-01-01", "end_date": "2024-12-31"}},
    "age": {"pyint": {"min_value": 18, "max_value": 90}},
    "balance": {"pydecimal": {"left_digits": 4, "right_digits": 2}},
    "score": {"pyfloat": {"min_value": 0, "max_value": 1}},
    "active": "pybool",
    "seen_at": {"date_time_between": {"start_date": "-30d"}},
    "city": {"provider": "city", "locale": "de_DE"},
    "tags": {"words": {"nb": 3}},
    "id": "uuid4",
}


def read(src: FakerSource) -> pa.Table:
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    return pa.concat_tables(tables)


def test_columns_are_typed_and_text_comes_from_the_template() -> None:
    src = FakerSource(n=50, fields=FIELDS, text_template="{name} <{email}>", seed=3)
    src.check("sources.0")
    table = read(src)
    assert table.num_rows == 50
    types = {f.name: f.type for f in table.schema}
    assert types["age"] == pa.int64() and types["score"] == pa.float64() and types["active"] == pa.bool_()
    assert types["signup"] == pa.date32() and pa.types.is_timestamp(types["seen_at"])
    assert types["balance"] == pa.decimal128(38, 2) and types["col_id"] == pa.string()  # id is the record's
    row = table.to_pylist()[0]
    assert row["text"] == f"{row['name']} <{row['email']}>"
    assert 18 <= row["age"] <= 90 and isinstance(row["balance"], Decimal)
    assert dt.date(2024, 1, 1) <= row["signup"] <= dt.date(2024, 12, 31)
    assert isinstance(yaml.safe_load(row["tags"]), list) and len(yaml.safe_load(row["tags"])) == 3
    assert row["id"] == "faker:faker#row=0"
    meta = load_meta(row["meta"])
    assert meta == {"synthetic": True, "generator": "faker", "seed": 3, "row": 0}


def test_same_seed_same_rows_whatever_the_partitioning_and_another_seed_other_rows() -> None:
    fields = {k: FIELDS[k] for k in ("name", "email", "signup", "age", "balance", "city")}
    a = read(FakerSource(n=30, fields=fields, seed=7))
    b = read(FakerSource(n=30, fields=fields, seed=7, rows_per_partition=7))
    longer = read(FakerSource(n=60, fields=fields, seed=7))
    other = read(FakerSource(n=30, fields=fields, seed=8))
    assert a.to_pylist() == b.to_pylist()
    assert longer.slice(0, 30).to_pylist() == a.to_pylist()  # row i depends on (seed, i) only
    names_a, names_other = a.column("name").to_pylist(), other.column("name").to_pylist()
    assert sum(x != y for x, y in zip(names_a, names_other, strict=True)) >= 25


def test_locale_per_field_and_for_the_source() -> None:
    table = read(
        FakerSource(
            n=40,
            locale="ja_JP",
            fields={"name": "name", "city": {"provider": "city", "locale": "de_DE"}, "zip": "postcode"},
        )
    ).to_pylist()
    # Japanese names are written in CJK characters; German postcodes are 5 digits, Japanese 123-4567
    assert all(any("\u3040" <= ch <= "\u9fff" for ch in r["name"]) for r in table)
    assert all(not any("\u3040" <= ch <= "\u9fff" for ch in r["city"]) for r in table)
    assert all(len(r["zip"]) == 8 and r["zip"][3] == "-" for r in table)
    german = read(FakerSource(n=40, locale="de_DE", fields={"zip": "postcode"})).column("zip").to_pylist()
    assert all(len(z) == 5 and z.isdigit() for z in german)


def test_null_fraction_leaves_nulls_without_shifting_the_other_values() -> None:
    base = {"name": "name", "email": "email"}
    plain = read(FakerSource(n=200, fields=base, seed=1))
    holes = read(
        FakerSource(n=200, fields={**base, "email": {"provider": "email", "null_fraction": 0.3}}, seed=1)
    )
    nulls = holes.column("email").null_count
    assert 30 <= nulls <= 90
    assert holes.column("name").to_pylist() == plain.column("name").to_pylist()


@pytest.mark.parametrize(
    ("fields", "template", "match"),
    [
        ({"a": "nmae"}, None, "no Faker provider 'nmae'.*did you mean 'name'"),
        ({"a": {"pyint": {"min_value": 5, "maximum": 2}}}, None, "pyint.*fails: TypeError"),
        ({"a": {"provider": "name", "locale": "xx_YY"}}, None, "no locale 'xx_YY'"),
        ({"a": "name"}, "{a} {b}", r"text_template uses \{b\}"),
    ],
)
def test_config_errors_name_the_field(fields: dict[str, Any], template: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        FakerSource(n=1, fields=fields, text_template=template).check("sources.0")
    assert info.value.path.startswith("sources.0")


def test_a_pipeline_ingests_faker_rows_and_a_rerun_is_a_cache_hit(tmp_path: Path) -> None:
    cfg = {
        "name": "fk",
        "sources": [{"type": "faker", "n": 25, "seed": 0, "fields": {"name": "name", "age": "pyint"}}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = Pipeline.from_file(path).run(until="ingest")
    again = Pipeline.from_file(path).run(until="ingest")
    assert first.status == again.status == "succeeded"
    assert (first.stages[0].stage, first.stages[0].status, first.stages[0].rows) == ("ingest", "ran", 25)
    assert again.stages[0].status == "cached"
    cfg["sources"][0]["seed"] = 1  # the seed is part of the key
    path.write_text(yaml.safe_dump(cfg))
    assert Pipeline.from_file(path).run(until="ingest").stages[0].status == "ran"
