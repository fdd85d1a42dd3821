"""The pdf source: pages, outline sections, tables, passwords, damaged files, scans."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genloom.sources.pdf import PdfSource

from .sources_fixtures import make_pdf, make_scanned_pdf, read_all


def test_pages_sections_and_ids(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "loom.pdf", pages=3)
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert [r["meta"]["page"] for r in rows] == [1, 2, 3]
    assert [r["id"] for r in rows] == [f"pdf:{path.as_posix()}#page={i}" for i in (1, 2, 3)]
    assert "intro page talks about looms" in rows[0]["text"]
    assert rows[0]["meta"]["section"] == ["Intro"]
    assert rows[1]["meta"]["section"] == ["Details", "Sub"]
    assert rows[0]["meta"]["pages"] == 3


def test_tables_as_markdown(tmp_path: Path) -> None:
    make_pdf(tmp_path / "t.pdf", pages=1)
    rows, _ = read_all(PdfSource(paths=[str(tmp_path)], tables="always"))
    assert "| Name | Qty |" in rows[-1]["text"]
    assert "| pear | 5 |" in rows[-1]["text"]


def test_passwords(tmp_path: Path) -> None:
    make_pdf(tmp_path / "locked.pdf", password="s3cret", pages=1)
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)]))
    assert rows == [] and [r["reason"] for r in rejected] == ["encrypted"]
    assert "PDF_PASSWORD" in rejected[0]["detail"]
    _, rejected = read_all(PdfSource(paths=[str(tmp_path)], password="nope"))
    assert [r["reason"] for r in rejected] == ["wrong_password"]
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)], password="nope", passwords=["s3cret"]))
    assert rejected == [] and "looms" in rows[0]["text"]
    # the secret never reaches the config dump that enters cache keys and logs
    assert "s3cret" not in str(PdfSource(paths=["x"], password="s3cret").config_dict())


def test_damaged_files(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", pages=3).read_bytes()
    (tmp_path / "truncated.pdf").write_bytes(good[: len(good) // 2])
    (tmp_path / "invalid.pdf").write_bytes(b"%PDF-1.3\nThis is not a valid PDF file\n%%EOF\n")
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "random.pdf").write_bytes(bytes(range(256)) * 8)
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)]))
    assert {r["meta"]["path"] for r in rows} == {f"{tmp_path.as_posix()}/good.pdf"}
    reasons = {Path(r["location"]).name: r["reason"] for r in rejected}
    assert reasons == {
        "truncated.pdf": "truncated",
        "invalid.pdf": "corrupt",
        "empty.pdf": "empty_file",
        "random.pdf": "corrupt",
    }


def test_scan_without_ocr_is_quarantined_with_hint(tmp_path: Path) -> None:
    make_scanned_pdf(tmp_path / "scan.pdf")
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)], ocr="never"))
    assert rows == []
    assert [r["reason"] for r in rejected] == ["no_text_layer"]
    assert "tesseract-ocr" in rejected[0]["detail"]


@pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="Tesseract not installed (apt-get install tesseract-ocr)"
)
def test_scan_is_ocrd_when_tesseract_exists(tmp_path: Path) -> None:
    make_scanned_pdf(tmp_path / "scan.pdf")
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert "SCANNED" in rows[0]["text"].upper()
    assert rows[0]["meta"]["ocr"] is True


def test_chunks_span_pages(tmp_path: Path) -> None:
    make_pdf(tmp_path / "loom.pdf", pages=3)
    rows, _ = read_all(PdfSource(paths=[str(tmp_path)], chunk={"size": 200, "overlap": 20, "min_size": 20}))
    assert len(rows) > 3
    assert all("#chunk=" in r["id"] and r["meta"]["doc_id"].endswith("loom.pdf") for r in rows)
    assert {r["meta"]["page"] for r in rows} == {1, 2, 3}


def test_damaged_shared_pdfs_quarantined_or_recovered(shared_data: Path) -> None:
    pdf = shared_data / "docs/pdf"
    paths = [str(pdf / "issue-297-broken-xref.pdf"), str(pdf / "zen_of_python_corrupted.pdf")]
    rows, rejected = read_all(PdfSource(paths=paths))
    assert rows == []
    assert {Path(r["location"]).name: r["reason"] for r in rejected} == {
        "issue-297-broken-xref.pdf": "broken_xref",
        "zen_of_python_corrupted.pdf": "corrupt_stream",
    }
    assert all("damaged: recover" in r["detail"] for r in rejected)
    rows, rejected = read_all(PdfSource(paths=paths, damaged="recover"))
    assert rejected == []
    by_name = {Path(r["meta"]["path"]).name: r for r in rows}
    xref = by_name["issue-297-broken-xref.pdf"]
    assert xref["text"] == "test example" and xref["meta"]["repaired"] == "xref"
    zen = by_name["zen_of_python_corrupted.pdf"]
    assert zen["text"].startswith("Beautiful is better than ugly.") and zen["meta"]["repaired"] == "stream"


def test_corrupt_stream_detected_in_own_fixture(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", pages=1).read_bytes()
    start = good.index(b"stream", good.index(b"/FlateDecode")) + len(b"stream\n")
    bad = bytearray(good)
    bad[start + 2 : start + 12] = b"\x00" * 10  # damage the deflate data after its header
    (tmp_path / "bad.pdf").write_bytes(bytes(bad))
    rows, rejected = read_all(PdfSource(paths=[str(tmp_path)]))
    assert [Path(r["meta"]["path"]).name for r in rows] == ["good.pdf"]
    assert [r["reason"] for r in rejected] == ["corrupt_stream"]
