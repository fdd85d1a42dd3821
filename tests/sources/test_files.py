"""The files source end to end: a mixed folder, every shared real-world file, the bad-inputs run."""

from __future__ import annotations

import difflib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from genloom.core.registry import SOURCES
from genloom.sources.files import READERS, FilesSource

from .sources_fixtures import make_docx, make_eml, make_odt, make_pdf, make_pptx, make_xlsx, read_all


def _norm(s: str) -> str:
    return " ".join(s.split())


def similarity(a: str, b: str) -> float:
    """Character similarity of two texts with whitespace runs collapsed (difflib ratio)."""
    return difflib.SequenceMatcher(None, _norm(a), _norm(b), autojunk=False).ratio()


def test_every_format_is_registered() -> None:
    names = SOURCES.names()
    assert set(READERS) | {"files"} <= set(names)


def test_mixed_folder_one_config(tmp_path: Path) -> None:
    make_pdf(tmp_path / "a.pdf", pages=2)
    make_docx(tmp_path / "b.docx")
    make_xlsx(tmp_path / "c.xlsx")
    make_pptx(tmp_path / "d.pptx")
    make_odt(tmp_path / "e.odt")
    make_eml(tmp_path / "f.eml")
    (tmp_path / "g.md").write_text("# Title\n\nSome markdown.")
    (tmp_path / "h.csv").write_text("q,a\nwhy,because\n")
    (tmp_path / "i.jsonl").write_text('{"text": "json line"}\n')
    (tmp_path / "j.html").write_text(
        "<html><head><title>T</title></head><body><p>web page text</p></body></html>"
    )
    (tmp_path / "k.rtf").write_text(r"{\rtf1\ansi hello rtf\par}")
    src = FilesSource(paths=[f"{tmp_path.as_posix()}/**/*"], options={"pdf": {"tables": "never"}})
    src.check("sources.0")
    rows, rejected = read_all(src)
    assert rejected == []
    assert {r["source"] for r in rows} == {
        "pdf",
        "docx",
        "excel",
        "pptx",
        "odt",
        "eml",
        "text",
        "csv",
        "json",
        "html",
        "rtf",
    }
    assert len({r["id"] for r in rows}) == len(rows)  # ids are unique
    again, _ = read_all(src)
    assert [r["id"] for r in again] == [r["id"] for r in rows]  # and stable


def _shared_files(root: Path) -> list[Path]:
    return sorted(p for d in ("docs", "tabular", "text", "web") for p in (root / d).rglob("*") if p.is_file())


# what the shared data holds on purpose: files that must be quarantined, with their reason
EXPECTED_REJECTED = {
    "docs/pdf/empty.pdf": "empty_file",
    "docs/pdf/invalid.pdf": "corrupt",
    "docs/pdf/crazyones-encrypted-256.pdf": "encrypted",
    "docs/pdf/libreoffice-writer-password.pdf": "encrypted",
    "docs/pdf/r6-both-passwords.pdf": "encrypted",
    "docs/office/password_protected.xlsx": "encrypted",
    "docs/pdf/issue-297-broken-xref.pdf": "broken_xref",
    "docs/pdf/zen_of_python_corrupted.pdf": "corrupt_stream",
}


def test_every_shared_file(shared_data: Path) -> None:
    files = _shared_files(shared_data)
    src = FilesSource(
        paths=[str(shared_data / d) for d in ("docs", "tabular", "text", "web")],
        options={"pdf": {"ocr": "never"}},
    )
    rows, rejected = read_all(src)
    got = {Path(r["location"]).relative_to(shared_data).as_posix(): r["reason"] for r in rejected}
    no_ocr = {
        "docs/pdf/c02-22-scanned.pdf",
        "docs/pdf/single_table-image-only.pdf",
        "docs/pdf/textract-ocr_text.pdf",
    }
    expected = {**EXPECTED_REJECTED, **dict.fromkeys(no_ocr, "no_text_layer")}
    if not (shutil.which("antiword") or shutil.which("catdoc") or shutil.which("soffice")):
        doc = [p for p in files if p.suffix == ".doc" and "docx" not in p.name]
        expected |= {p.relative_to(shared_data).as_posix(): "missing_dependency" for p in doc}
    assert got == expected
    read = {Path(r["meta"]["path"].split("!")[0]).relative_to(shared_data).as_posix() for r in rows}
    assert read | set(got) == {p.relative_to(shared_data).as_posix() for p in files}  # no file lost
    assert "robots.txt" in {Path(p).name for p in read}


def test_passwords_open_the_shared_pdfs(shared_data: Path) -> None:
    pdfs = shared_data / "docs/pdf"
    names = ["crazyones-encrypted-256.pdf", "libreoffice-writer-password.pdf", "r6-both-passwords.pdf"]
    src = FilesSource(paths=[str(pdfs / n) for n in names], passwords=["password", "openpassword", "foo"])
    rows, rejected = read_all(src)
    assert rejected == []
    assert {Path(r["meta"]["path"]).name for r in rows} == set(names)


@pytest.mark.parametrize(
    ("document", "reference"),
    [
        ("docs/pdf/textract-raw_text.pdf", "docs/pdf/textract-raw_text.txt"),
        ("docs/office/textract-raw_text.doc", "docs/office/textract-raw_text.doc.txt"),
        ("docs/office/textract-raw_text.pptx", "docs/office/textract-raw_text.pptx.txt"),
        ("docs/office/textract-raw_text.rtf", "docs/office/textract-raw_text.doc.txt"),
    ],
)
def test_text_matches_reference(shared_data: Path, document: str, reference: str) -> None:
    if document.endswith(".doc") and not any(
        Path(d, t).exists() for d in os.environ["PATH"].split(":") for t in ("antiword", "catdoc")
    ):
        pytest.skip("no .doc converter installed (apt-get install antiword)")
    rows, rejected = read_all(FilesSource(paths=[str(shared_data / document)]))
    assert rejected == []
    text = "\n\n".join(r["text"] for r in rows)
    assert similarity(text, (shared_data / reference).read_text("utf-8")) >= 0.95


def _bad_inputs(folder: Path, big_line_mb: int = 0) -> None:
    """The bad-inputs folder, next to good files that must all be read."""
    good = make_pdf(folder / "good.pdf", pages=3).read_bytes()
    (folder / "empty.txt").write_bytes(b"")
    (folder / "truncated.pdf").write_bytes(good[: len(good) // 2])
    (folder / "invalid.pdf").write_bytes(b"%PDF-1.3\nThis is not a valid PDF file\n%%EOF\n")
    make_pdf(folder / "locked.pdf", password="right", pages=1)
    (folder / "random.docx").write_bytes(os.urandom(8192))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * 200_000_000)
    (folder / "bomb.zip").write_bytes(buf.getvalue())
    (folder / "bad-utf8.txt").write_bytes("Grüße aus Köln. ".encode() * 50 + b"\xff\xfe\xfa" + b" tail")
    (folder / "ragged.csv").write_text("a,b\n1,2\n3\n4,5\n")
    make_docx(folder / "good.docx")
    (folder / "good.txt").write_text("A good text file.")
    if big_line_mb:
        with open(folder / "one-line.txt", "w") as f:
            block = "word " * 200_000  # 1 MB
            for _ in range(big_line_mb):
                f.write(block)


BAD_EXPECTED = {
    "empty.txt": "empty_file",
    "truncated.pdf": "truncated",
    "invalid.pdf": "corrupt",
    "locked.pdf": "wrong_password",
    "random.docx": "corrupt",
    "bomb.zip": "zip_bomb",
    "ragged.csv": "malformed_row",
}


def test_bad_inputs_quarantined_good_files_kept(tmp_path: Path, shared_data_optional: Path | None) -> None:
    _bad_inputs(tmp_path)
    paths = [str(tmp_path)]
    extra = {}
    if shared_data_optional is not None:
        pdf = shared_data_optional / "docs/pdf"
        for name in ("issue-297-broken-xref.pdf", "zen_of_python_corrupted.pdf"):
            paths.append(str(pdf / name))
        paths.append(str(shared_data_optional / "docs/office/password_protected.xlsx"))
        extra = {
            "password_protected.xlsx": "wrong_password",
            "issue-297-broken-xref.pdf": "broken_xref",
            "zen_of_python_corrupted.pdf": "corrupt_stream",
        }
    rows, rejected = read_all(FilesSource(paths=paths, password="wrong"))
    got = {Path(r["location"].split(":")[0]).name: r["reason"] for r in rejected}
    assert got == {**BAD_EXPECTED, **extra}
    read = {Path(r["meta"]["path"]).name for r in rows}
    assert {"good.pdf", "good.docx", "good.txt", "ragged.csv"} <= read  # ragged: its good rows stay
    # UTF-8 with three damaged bytes is read as UTF-8: only those bytes become U+FFFD, counted
    damaged = next(r for r in rows if r["meta"]["path"].endswith("bad-utf8.txt"))
    assert damaged["text"].endswith("Grüße aus Köln. \ufffd\ufffd\ufffd tail")
    assert damaged["meta"]["invalid_bytes"] == 3
    # Memory is checked in a fresh process below: this process's peak includes earlier tests.


@pytest.fixture
def shared_data_optional() -> Path | None:
    from .sources_fixtures import shared_data_dir

    return shared_data_dir()


@pytest.mark.slow
def test_bad_inputs_with_200mb_line_in_bounded_memory(tmp_path: Path) -> None:
    """The same run plus a 200 MB single-line file, in a fresh process so its peak memory is its own."""
    _bad_inputs(tmp_path, big_line_mb=200)
    code = textwrap.dedent(
        rf"""
        import json, re
        from genloom.core.steps import StepContext
        def peak_kib():  # VmHWM: this process's own peak (ru_maxrss survives exec from a big parent)
            return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
        from genloom.sources.files import FilesSource
        src = FilesSource(paths=[{str(tmp_path)!r}], password="wrong")
        ctx = StepContext()
        n = sum(t.num_rows for p in src.partitions() for t in src.run_partition(p, ctx))
        print(json.dumps({{"rows": n, "rejected": ctx.rejected,
                          "peak_kib": peak_kib()}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    got = {Path(r["location"].split(":")[0]).name: r["reason"] for r in result["rejected"]}
    assert got == {**BAD_EXPECTED, "one-line.txt": "line_too_long"}
    assert result["peak_kib"] < 1024 * 1024


def test_shared_options_reach_every_reader(tmp_path: Path) -> None:
    make_docx(tmp_path / "m.docx")
    make_pdf(tmp_path / "p.pdf", pages=2)
    (tmp_path / "t.csv").write_text("title,body\nHi,there\n")
    src = FilesSource(
        paths=[str(tmp_path)],
        chunk={"size": 120, "overlap": 10, "min_size": 10},
        text_template="{title}/{body}",
        formats_only=["docx", "pdf", "csv"],
    )
    rows, rejected = read_all(src)
    assert rejected == []
    chunked = [r for r in rows if r["source"] in ("docx", "pdf")]
    assert chunked and all("#chunk=" in r["id"] and len(r["text"]) <= 140 for r in chunked)
    assert [r["text"] for r in rows if r["source"] == "csv"] == ["Hi/there"]
    skipped, _ = read_all(FilesSource(paths=[str(tmp_path)], formats_only=["csv"]))
    assert {r["source"] for r in skipped} == {"csv"}
