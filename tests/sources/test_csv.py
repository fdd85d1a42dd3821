"""The csv source: sniffing, templates, typed columns, malformed rows, streaming."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from genloom.core.steps import StepContext
from genloom.sources.csv import CsvSource

from .sources_fixtures import read_all, shared_data_dir


def test_dialect_header_template(tmp_path: Path) -> None:
    (tmp_path / "posts.csv").write_text('title;body;score\nHello;"first; post";3\nBye;second post;4\n')
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path)], text_template="{title}: {body}"))
    assert rejected == []
    assert [r["text"] for r in rows] == ["Hello: first; post", "Bye: second post"]
    assert rows[0]["id"] == f"csv:{tmp_path.as_posix()}/posts.csv#row=0"
    assert rows[1]["score"] == 4 and rows[1]["meta"]["row"] == 1


def test_no_header_and_encodings(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("1,2.5,a\n3,4.5,b\n5,6.5,c\n")
    (tmp_path / "cyr.csv").write_bytes("name,city\nИван,Москва\nМария,Тверь\n".encode("cp1251"))
    (tmp_path / "u16.tsv").write_bytes("Title only\t\t\nk\tv\tw\nä\t1\tx\nö\t2\ty\n".encode("utf-16"))
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path)]))
    assert rejected == []
    by = {}
    for r in rows:
        by.setdefault(Path(r["meta"]["path"]).name, []).append(r)
    assert [r["f0"] for r in by["n.csv"]] == [1, 3, 5]
    assert by["n.csv"][0]["f1"] == 2.5
    assert [r["text"] for r in by["cyr.csv"]] == ["name: Иван; city: Москва", "name: Мария; city: Тверь"]
    assert by["u16.tsv"][0]["text"] == "k: ä; v: 1; w: x"  # title row skipped, header found


def test_ragged_rows_quarantined_with_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n9,10,11,12\n13,14,15\n")
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path)]))
    assert [r["a"] for r in rows] == [1, 6, 13]
    assert [(r["reason"], r["location"].rsplit(":", 1)[1]) for r in rejected] == [
        ("malformed_row", "3"),
        ("malformed_row", "5"),
    ]


def test_streams_in_batches_with_stable_types(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("id,value,label\n")
        for i in range(60_000):
            f.write(f"{i},{'x' if i == 50_000 else i * 0.5},lab{i % 7}\n")
    src = CsvSource(paths=[str(path)], block_mb=0.25, id_column="id")
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    assert len(tables) > 3
    assert sum(t.num_rows for t in tables) == 60_000
    assert {t.schema.field("value").type for t in tables} == {pa.float64()}
    merged = pa.concat_tables(tables)
    assert merged.column("value")[50_000].as_py() is None  # an unparsable value becomes null
    assert merged.column("id")[7].as_py() == f"csv:{path.as_posix()}#id=7"


def test_column_names_for_a_file_without_header_and_blank_after_delimiter(tmp_path: Path) -> None:
    # UCI style: no header row, ", " between values, "?" for missing
    (tmp_path / "adult.csv").write_text(
        "39, State-gov, 77516, <=50K\n50, ?, 83311, <=50K\n38, Private, 215646, >50K\n\n"
    )
    names = ["age", "workclass", "fnlwgt", "income"]
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path)], column_names=names, null_values=["?"]))
    assert rejected == []
    assert [r["age"] for r in rows] == [39, 50, 38]  # the first row is data, " 39" an int
    assert [r["workclass"] for r in rows] == ["State-gov", None, "Private"]
    assert rows[2]["income"] == ">50K" and rows[0]["fnlwgt"] == 77516


def test_column_names_replace_a_header_and_must_match_the_width(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n1,x\n2,y\n")
    rows, _ = read_all(CsvSource(paths=[str(tmp_path / "h.csv")], header=True, column_names=["n", "text"]))
    assert [(r["n"], r["col_text"]) for r in rows] == [(1, "x"), (2, "y")]
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path / "h.csv")], column_names=["only"]))
    assert rows == [] and [r["reason"] for r in rejected] == ["malformed_csv"]


def test_blank_after_a_given_delimiter_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("name; score; city\nann; 3; NA\nbob; 4; Oslo\n")
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path)], delimiter=";"))
    assert rejected == []
    assert [(r["name"], r["score"], r["city"]) for r in rows] == [("ann", 3, None), ("bob", 4, "Oslo")]


def test_adult_reads_with_column_names() -> None:
    root = shared_data_dir()
    path = root / "tabular" / "adult-train.csv" if root else None
    if path is None or not path.exists():
        pytest.skip("shared data (tabular/adult-train.csv) is not available")
    names = [
        "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
        "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
        "native-country", "income",
    ]  # fmt: skip
    src = CsvSource(paths=[str(path)], column_names=names, null_values=["?"])
    ctx = StepContext()
    table = pa.concat_tables([t for p in src.partitions() for t in src.run_partition(p, ctx)])
    assert ctx.rejected == [] and table.num_rows == 32_561
    assert table.column_names[4:] == names
    assert table.schema.field("age").type == pa.int64()
    assert table.schema.field("capital-gain").type == pa.int64()
    assert table.column("workclass")[0].as_py() == "State-gov"
    assert table.column("workclass").null_count == 1836  # " ?" is missing
    assert set(table.column("income").unique().to_pylist()) == {"<=50K", ">50K"}
