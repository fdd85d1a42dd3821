"""The json source: JSON, JSON Lines and Parquet with field paths."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from genloom.sources.json import JsonSource

from .sources_fixtures import read_all


def test_json_document_with_records_path(tmp_path: Path) -> None:
    doc = {
        "data": {
            "items": [
                {"id": "a1", "post": {"body": "first body"}, "lang": "en"},
                {"id": "b2", "post": {"body": "second"}},
            ]
        }
    }
    (tmp_path / "d.json").write_text(json.dumps(doc))
    src = JsonSource(paths=[str(tmp_path)], records_path="data.items", text_field="post.body", id_field="id")
    rows, rejected = read_all(src)
    assert rejected == []
    assert [r["text"] for r in rows] == ["first body", "second"]
    assert rows[0]["id"] == f"json:{tmp_path.as_posix()}/d.json#id=a1"
    assert rows[0]["meta"]["fields"] == {"id": "a1", "lang": "en"}


def test_jsonl_bad_line_and_template(tmp_path: Path) -> None:
    lines = ['{"title": "A", "body": "alpha"}', "{not json", '{"title": "B", "body": "beta"}', ""]
    (tmp_path / "x.jsonl").write_text("\n".join(lines))
    rows, rejected = read_all(JsonSource(paths=[str(tmp_path)], text_template="{title} - {body}"))
    assert [r["text"] for r in rows] == ["A - alpha", "B - beta"]
    assert [(r["reason"], r["location"].rsplit(":", 1)[1]) for r in rejected] == [("malformed_json", "2")]
    assert rows[1]["id"].endswith("x.jsonl#line=3")


def test_parquet_keeps_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["one", "two"], "score": [1.5, 2.5]}), tmp_path / "t.parquet")
    rows, rejected = read_all(JsonSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert [(r["text"], r["score"]) for r in rows] == [("one", 1.5), ("two", 2.5)]
    assert rows[0]["id"] == f"json:{tmp_path.as_posix()}/t.parquet#row=0"


def test_parquet_table_without_text_column_keeps_its_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genloom.core.steps import StepContext

    pq.write_table(pa.table({"age": [31, None], "region": ["EU", "US"]}), tmp_path / "t.parquet")
    src = JsonSource(paths=[str(tmp_path)])
    ctx = StepContext()
    (table,) = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    assert ctx.rejected == []
    assert table.column("age").to_pylist() == [31, None]
    assert table.column("text").to_pylist() == ["age: 31; region: EU", "region: US"]
    bad, ctx = JsonSource(paths=[str(tmp_path)], text_field="body"), StepContext()
    assert [t for p in bad.partitions() for t in bad.run_partition(p, ctx)] == []
    (rejected,) = ctx.rejected  # a named text column that is not there quarantines the file
    assert rejected["reason"] == "missing_field" and "text_field 'body'" in rejected["detail"]


def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_parquet_binary_column_stays_binary_and_out_of_the_text(tmp_path: Path) -> None:
    from genloom.core.steps import StepContext

    pngs = [_png((255, 0, 0)), _png((0, 0, 255))]  # not UTF-8: 0x89 'PNG' ... and NUL bytes
    for name, table in {
        "with_text": pa.table({"caption": ["a red square", "a blue\x00 square"], "image": pngs}),
        "no_text": pa.table({"label": ["red", None], "image": pngs, "size": [4, 4]}),
    }.items():
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "t.parquet")
        src = JsonSource(paths=[str(tmp_path / name)], text_field="caption" if name == "with_text" else None)
        ctx = StepContext()
        (out,) = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
        assert ctx.rejected == [], name
        assert out.schema.field("image").type == pa.binary(), name
        assert out.column("image").to_pylist() == pngs, name  # kept byte for byte (NULs included)
        texts = out.column("text").to_pylist()
        if name == "with_text":
            assert texts == ["a red square", "a blue square"]
        else:
            assert texts == ["label: red; size: 4", "size: 4"]  # the binary column is not text
