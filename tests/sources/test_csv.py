"""The csv source: sniffing, templates, typed columns, malformed rows, streaming."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from genloom.core.steps import StepContext
from genloom.sources.csv import CsvSource

from .sources_fixtures import read_all


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
