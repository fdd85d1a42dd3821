"""The manual source: rows people typed, with author and time kept, broken rows quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from genloom.core.errors import ConfigError
from genloom.core.records import load_meta
from genloom.core.steps import StepContext
from genloom.pipeline import Pipeline
from genloom.sources.manual import ManualSource


def read(src: ManualSource) -> tuple[list[dict], StepContext]:
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    return (pa.concat_tables(tables).to_pylist() if tables else []), ctx


CSV = (
    "id,text,label,author,created_at\n"
    "t1,The printer is on fire,urgent,ana,2026-03-01T09:30:00+02:00\n"
    't2,"Password reset, please",normal,bo,2026-03-01 10:00\n'
    "t3,,normal,ana,2026-03-02T08:00:00Z\n"  # no text
    "t4,Where is my invoice?,normal,,2026-03-02T08:00:00Z\n"  # no author
    "t5,App crashes on start,urgent,cy,yesterday\n"  # a time that does not parse
    "t1,A second t1,normal,bo,2026-03-03T08:00:00Z\n"  # a repeated id
    "t6,Thanks!,normal,bo,\n"  # no time: kept, none in meta
)


def test_csv_rows_keep_author_time_and_columns_and_broken_rows_are_quarantined(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text(CSV)
    src = ManualSource(path="labels.csv", id_field="id")
    src.bind(tmp_path)
    rows, ctx = read(src)
    assert [r["id"] for r in rows] == [
        "manual:labels.csv#id=t1",
        "manual:labels.csv#id=t2",
        "manual:labels.csv#id=t6",
    ]
    first = rows[0]
    assert (
        first["text"] == "The printer is on fire" and first["label"] == "urgent" and first["col_id"] == "t1"
    )
    meta = load_meta(first["meta"])
    assert meta == {
        "manual": True,
        "path": "labels.csv",
        "line": 2,
        "author": "ana",
        "written_at": "2026-03-01T07:30:00Z",
    }
    assert load_meta(rows[1]["meta"])["written_at"] == "2026-03-01T10:00:00Z"  # naive: UTC
    assert "written_at" not in load_meta(rows[2]["meta"])
    reasons = {(r["reason"], r["location"]) for r in ctx.rejected}
    assert reasons == {
        ("missing_field", "labels.csv:4"),
        ("missing_field", "labels.csv:5"),
        ("bad_time", "labels.csv:6"),
        ("duplicate_id", "labels.csv:7"),
    }
    assert any("text" in r["detail"] for r in ctx.rejected if r["location"] == "labels.csv:4")
    assert any("author" in r["detail"] for r in ctx.rejected if r["location"] == "labels.csv:5")


def test_jsonl_keeps_json_types_and_a_template_and_required_fields(tmp_path: Path) -> None:
    lines = [
        {
            "question": "How do I reset?",
            "answer": "Settings > Reset",
            "rating": 5,
            "who": "ana",
            "at": 1767225600,
        },
        {"question": "Refund?", "answer": None, "rating": 3, "who": "bo", "at": "2026-01-01T00:00:00Z"},
        "not an object",
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{broken json\n\n"
    (tmp_path / "qa.jsonl").write_text(text)
    src = ManualSource(
        path="qa.jsonl", text_template="Q: {question}\nA: {answer}", author_field="who", time_field="at"
    )
    src.bind(tmp_path)
    rows, ctx = read(src)
    assert len(rows) == 1 and rows[0]["text"] == "Q: How do I reset?\nA: Settings > Reset"
    assert rows[0]["rating"] == 5 and rows[0]["question"] == "How do I reset?"
    meta = load_meta(rows[0]["meta"])
    assert meta["author"] == "ana" and meta["written_at"] == "2026-01-01T00:00:00Z"
    assert sorted((r["reason"], r["location"]) for r in ctx.rejected) == [
        ("malformed_row", "qa.jsonl:3"),
        ("malformed_row", "qa.jsonl:4"),
        ("missing_field", "qa.jsonl:2"),
    ]
    relaxed = ManualSource(
        path="qa.jsonl",
        text_template="{question}",
        required=["question"],
        author_field="who",
        time_field="at",
    )
    relaxed.bind(tmp_path)
    assert len(read(relaxed)[0]) == 2


def test_a_jsonl_column_whose_type_changes_is_kept_as_text(tmp_path: Path) -> None:
    lines = [{"text": "a", "author": "ana", "score": 3}, {"text": "b", "author": "bo", "score": "n/a"}]
    lines += [
        {"text": "c", "author": "cy", "score": 2.5, "votes": 1},
        {"text": "d", "author": "cy", "votes": 2.0},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    src = ManualSource(path="m.jsonl")
    src.bind(tmp_path)
    rows, ctx = read(src)
    assert not ctx.rejected
    assert [r["score"] for r in rows] == ["3", "n/a", "2.5", None]
    assert [r["votes"] for r in rows] == [None, None, 1.0, 2.0]  # integers and floats: numbers


def test_unknown_extension_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="format"):
        ManualSource(path="notes.txt").check("sources.0")


def test_an_edit_to_the_file_reruns_the_source(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text(CSV)
    cfg = {"name": "m", "sources": [{"type": "manual", "path": "labels.csv", "id_field": "id"}]}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = Pipeline.from_file(path).run(until="ingest").stages[0]
    assert (first.status, first.rows) == ("ran", 3)
    assert Pipeline.from_file(path).run(until="ingest").stages[0].status == "cached"
    with (tmp_path / "labels.csv").open("a") as f:
        f.write("t7,One more,normal,cy,2026-03-04T08:00:00Z\n")
    again = Pipeline.from_file(path).run(until="ingest").stages[0]
    assert (again.status, again.rows) == ("ran", 4)
