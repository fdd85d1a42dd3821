"""The manual source's file as the dashboard writes it: appended records and labels are what the
source reads next."""

from __future__ import annotations

from pathlib import Path

import pytest

from genloom.core.errors import NotFoundError
from genloom.core.records import Rejected
from genloom.sources.manual import ManualSource
from genloom.ui.records import ManualFile


def _read(source: ManualSource) -> list[dict]:
    return [r for r in source.read(source.path) if not isinstance(r, Rejected)]


@pytest.mark.parametrize("name", ["notes.jsonl", "notes.csv"])
def test_append_and_label_are_read_by_the_manual_source(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text('text,author\n"first, with a comma",ann\nsecond,bob\n')
    else:
        path.write_text('{"text": "first", "author": "ann"}\n{"text": "second", "author": "bob"}\n')
    source = ManualSource(path=str(path))
    file = ManualFile(source)
    row = file.append("typed in the dashboard", "cy", {"label": "positive"})
    assert row.fields["text"] == "typed in the dashboard"
    file.label(file.rows()[0].line, "label", "negative")
    records = _read(source)
    assert [r["text"] for r in records][-1] == "typed in the dashboard"
    assert records[0]["label"] == "negative" and records[0]["meta"]["author"] == "ann"
    assert records[-1]["label"] == "positive" and records[-1]["meta"]["written_at"].endswith("Z")
    assert records[1].get("label") in (None, "")  # not labelled
    with pytest.raises(NotFoundError):
        file.label(99, "label", "x")


def test_append_creates_a_missing_file_and_gives_an_id(tmp_path: Path) -> None:
    source = ManualSource(path=str(tmp_path / "new.jsonl"), id_field="uid")
    ManualFile(source).append("hello", "ann", {"label": ""})
    (record,) = _read(source)
    assert record["id"].startswith("manual:") and "uid=" in record["id"]
    assert "label" not in record  # an empty label is not written
