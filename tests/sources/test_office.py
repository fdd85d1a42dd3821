"""DOCX, Excel, PPTX, ODT, RTF, legacy DOC and EML readers on files written by libraries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from genloom.sources.doc import DocSource
from genloom.sources.docx import DocxSource
from genloom.sources.eml import EmlSource
from genloom.sources.excel import ExcelSource
from genloom.sources.odt import OdtSource
from genloom.sources.pptx import PptxSource
from genloom.sources.rtf import RtfSource

from .sources_fixtures import make_docx, make_eml, make_odt, make_pptx, make_xlsx, read_all


def test_docx_structure_lists_tables_props(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "manual.docx")
    rows, rejected = read_all(DocxSource(paths=[str(tmp_path)]))
    assert rejected == []
    (row,) = rows
    assert row["id"] == f"docx:{path.as_posix()}"
    assert "- first item" in row["text"] and "  - nested item" in row["text"]
    assert "| Part | Count |\n|---|---|\n| shuttle | 2 |" in row["text"]
    assert row["meta"]["title"] == "Loom manual" and row["meta"]["author"] == "Ada"
    chunks, _ = read_all(DocxSource(paths=[str(tmp_path)], chunk={"size": 200, "overlap": 0, "min_size": 10}))
    sections = [c["meta"].get("section") for c in chunks]
    assert ["Loom manual", "Setup", "Warping"] in sections
    assert ["Loom manual", "Care"] in sections


def test_docx_named_doc_and_garbage_named_docx(tmp_path: Path) -> None:
    data = make_docx(tmp_path / "m.docx").read_bytes()
    (tmp_path / "m.docx").unlink()
    (tmp_path / "old-name.doc").write_bytes(data)
    (tmp_path / "garbage.docx").write_bytes(os.urandom(4096))
    rows, rejected = read_all(DocSource(paths=[str(tmp_path)], include=["*.doc", "*.docx"]))
    assert [r["source"] for r in rows] == ["docx"]
    assert [(Path(r["location"]).name, r["reason"]) for r in rejected] == [("garbage.docx", "corrupt")]


def test_excel_sheets_rows_and_merged_cells(tmp_path: Path) -> None:
    make_xlsx(tmp_path / "cups.xlsx")
    rows, rejected = read_all(ExcelSource(paths=[str(tmp_path)]))
    assert rejected == []
    (sheet,) = rows  # the empty sheet gives no record
    assert sheet["text"].startswith("Stanley Cups\n\n| Team | City | Cups |")
    assert (
        "| Leafs | TOR | 13 |" in sheet["text"] and "| Leafs | TOR | 1.5 |" in sheet["text"]
    )  # merge filled
    assert sheet["id"].endswith("cups.xlsx#sheet=Cups")
    recs, _ = read_all(ExcelSource(paths=[str(tmp_path)], mode="rows", text_template="{Team} has {Cups}"))
    assert [r["text"] for r in recs] == ["Blues has 1", "Flyers has 2", "Leafs has 13", "Leafs has 1.5"]
    assert recs[0]["meta"]["fields"] == {"Team": "Blues", "City": "STL", "Cups": "1"}


def test_pptx_slides_tables_notes(tmp_path: Path) -> None:
    make_pptx(tmp_path / "deck.pptx")
    rows, rejected = read_all(PptxSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert [r["meta"]["page"] for r in rows] == [1, 2]
    assert rows[0]["text"] == "Weaving 101\n\nAn introduction"
    assert "| shuttle | carries the weft |" in rows[1]["text"]
    assert rows[1]["text"].endswith("Notes:\nMention the heddles.")
    assert rows[1]["meta"]["section"] == ["Parts"]


def test_odt_and_rtf(tmp_path: Path) -> None:
    make_odt(tmp_path / "t.odt")
    rtf = r"{\rtf1\ansi\ansicpg1252\deff0 {\b Title}\par Caf\'e9 cr\'e8me and looms.\par}"
    (tmp_path / "t.rtf").write_text(rtf)
    odt, rejected = read_all(OdtSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert (
        odt[0]["text"]
        == "Threads\n\nCotton and wool.\n\n- warp\n\n- weft\n\n| Fibre | Weight |\n|---|---|\n| wool | heavy |"
    )
    assert odt[0]["meta"]["title"] == "Threads"
    rows, _ = read_all(RtfSource(paths=[str(tmp_path)]))
    assert rows[0]["text"] == "Title\nCafé crème and looms."


def test_doc_without_converters_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "old.doc").write_bytes(
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "WordDocument".encode("utf-16-le") + b"\0" * 600
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    _, rejected = read_all(DocSource(paths=[str(tmp_path)]))
    assert [r["reason"] for r in rejected] == ["missing_dependency"]
    assert "apt-get install antiword" in rejected[0]["detail"]


def test_eml_body_headers_and_attachment(tmp_path: Path) -> None:
    docx_bytes = make_docx(tmp_path / "a.docx").read_bytes()
    (tmp_path / "a.docx").unlink()
    path = make_eml(tmp_path / "m.eml", attachment=("manual.docx", docx_bytes))
    rows, rejected = read_all(EmlSource(paths=[str(tmp_path)]))
    assert rejected == []
    mail, attached = rows
    assert mail["text"] == "Loom delivery\n\nThe loom arrives on Friday.\n\nRegards, Ada"
    assert mail["meta"]["from"] == "Ada <ada@example.com>" and mail["meta"]["attachments"] == ["manual.docx"]
    assert attached["id"] == f"docx:{path.as_posix()}!manual.docx"
    assert "Oil the loom" in attached["text"]
    html, _ = read_all(EmlSource(paths=[str(tmp_path)], prefer_html=True, attachments=False))
    assert "(HTML)" in html[0]["text"]


@pytest.mark.skipif(
    shutil.which("antiword") is None and shutil.which("catdoc") is None, reason="no antiword/catdoc"
)
def test_doc_real_file(shared_data: Path) -> None:
    rows, rejected = read_all(
        DocSource(paths=[str(shared_data / "docs/office/fake-doc-emphasized-text.doc")])
    )
    assert rejected == []
    assert "I am a bold italic bold-italic text." in rows[0]["text"]


def test_excel_table_mode_keeps_typed_columns(tmp_path: Path) -> None:
    import datetime as dt

    import openpyxl
    import pyarrow as pa

    from genloom.core.steps import StepContext

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "People"
    ws.append(["Customers 2026"])  # a title row above the header
    ws.append(["id", "age", "income", "member", "joined", "region"])
    ws.append([7, 31, 1200.5, True, dt.datetime(2026, 1, 2, 3, 4), "EU"])
    ws.append([8, None, 990, False, dt.datetime(2025, 6, 1), "US"])
    ws.append([9, 45, 1500, True, None, 3])  # a number among texts: the column stays text
    wb.save(str(tmp_path / "people.xlsx"))
    src = ExcelSource(paths=[str(tmp_path)], mode="table", id_column="id")
    ctx = StepContext()
    tables = [t for p in src.partitions() for t in src.run_partition(p, ctx)]
    assert ctx.rejected == []
    table = pa.concat_tables(tables)
    assert table.schema.field("col_id").type == pa.int64()  # ``id`` is a record column: renamed
    assert table.schema.field("age").type == pa.int64()
    assert table.schema.field("income").type == pa.float64()
    assert table.schema.field("member").type == pa.bool_()
    assert table.schema.field("joined").type == pa.timestamp("us")
    assert table.schema.field("region").type == pa.string()
    assert table.column("age").to_pylist() == [31, None, 45]  # an empty cell is null
    assert table.column("region").to_pylist() == ["EU", "US", "3"]
    assert table.column("joined").to_pylist()[2] is None
    assert table.column("id").to_pylist()[0].endswith("people.xlsx#sheet=People&id=7")
    assert len(set(table.column("id").to_pylist())) == 3
    assert table.column("text").to_pylist()[0].startswith("col_id: 7; age: 31; income: 1200.5")
