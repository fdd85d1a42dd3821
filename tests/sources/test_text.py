"""The text source: encodings, mojibake, NFC, Markdown sections, streaming limits."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from genloom.sources.text import TextSource

from .sources_fixtures import read_all


def test_encodings_mojibake_and_nfc(tmp_path: Path) -> None:
    (tmp_path / "fr.txt").write_bytes("Le café est crème, déjà vu à Noël.".encode("cp1252"))
    (tmp_path / "u16.txt").write_bytes("naïve résumé".encode("utf-16"))
    (tmp_path / "moji.txt").write_text("The loom doesnâ€™t stop at the cafÃ©.", encoding="utf-8")
    (tmp_path / "nfd.txt").write_text(unicodedata.normalize("NFD", "Noël façade"), encoding="utf-8")
    rows, rejected = read_all(TextSource(paths=[str(tmp_path)]))
    assert rejected == []
    by = {Path(r["meta"]["path"]).name: r for r in rows}
    assert by["fr.txt"]["text"] == "Le café est crème, déjà vu à Noël."
    assert by["fr.txt"]["meta"]["encoding"] == "cp1252"
    assert by["u16.txt"]["text"] == "naïve résumé"
    assert by["moji.txt"]["text"] == "The loom doesn't stop at the café."
    assert by["nfd.txt"]["text"] == unicodedata.normalize("NFC", "Noël façade")
    assert by["fr.txt"]["id"] == f"text:{tmp_path.as_posix()}/fr.txt"


def test_markdown_chunks_keep_sections(tmp_path: Path) -> None:
    body = "\n\n".join(f"Paragraph {i} about warp and weft. " * 4 for i in range(8))
    (tmp_path / "guide.md").write_text(
        f"# Guide\n\nIntro line.\n\n## Warp\n\n{body}\n\n## Weft\n\nLast words.\n"
    )
    rows, _ = read_all(TextSource(paths=[str(tmp_path)], chunk={"size": 400, "overlap": 40, "min_size": 50}))
    assert len(rows) > 3
    assert rows[0]["meta"]["section"] == ["Guide"]
    assert any(r["meta"].get("section") == ["Guide", "Warp"] for r in rows)
    assert rows[-1]["meta"]["section"] == ["Guide", "Weft"]
    assert [r["meta"]["chunk"] for r in rows] == list(range(len(rows)))
    assert all(r["id"].startswith("text:") and "#chunk=" in r["id"] for r in rows)
    assert all(len(r["text"]) <= 440 for r in rows)


def test_bad_text_files_are_quarantined(tmp_path: Path) -> None:
    (tmp_path / "broken.txt").write_bytes(
        "Déjà vu, naïve café. ".encode() * 10 + b"\xc3\x28 bad" + "ok é".encode()
    )
    (tmp_path / "long.txt").write_text("x" * 5000)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("   \n\n  \n")
    (tmp_path / "good.txt").write_text("fine")
    rows, rejected = read_all(TextSource(paths=[str(tmp_path)], max_line_chars=1000))
    reasons = {Path(r["location"]).name: r["reason"] for r in rejected}
    assert reasons == {
        "long.txt": "line_too_long",
        "empty.txt": "empty_file",
        "blank.txt": "no_text",
    }
    by = {Path(r["meta"]["path"]).name: r for r in rows}
    assert by["good.txt"]["text"] == "fine"
    # damaged UTF-8 is no longer quarantined: the one bad byte becomes U+FFFD, counted
    assert by["broken.txt"]["text"].endswith("café. \ufffd( badok é")
    assert by["broken.txt"]["meta"]["invalid_bytes"] == 1
    assert set(by) == {"good.txt", "broken.txt"}


def test_large_file_is_split_in_parts(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("\n\n".join(f"para {i} " + "y" * 90 for i in range(100)))
    rows, _ = read_all(TextSource(paths=[str(tmp_path)], max_record_chars=2000))
    assert len(rows) >= 5
    assert rows[1]["id"].endswith("#part=1")
    assert sum(len(r["text"]) for r in rows) > 9000
