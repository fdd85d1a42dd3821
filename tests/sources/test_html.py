"""The html source: main text, title and links, charsets."""

from __future__ import annotations

from pathlib import Path

from genloom.sources.html import HtmlSource

from .sources_fixtures import read_all

ARTICLE = " ".join(["The loom weaves threads into cloth, row after row, with patience and care."] * 6)
PAGE = f"""<!DOCTYPE html><html lang="en"><head><title>Loom news</title>
<meta name="description" content="All about looms"></head><body>
<nav><a href="/">Home</a> | <a href="/shop">Shop</a> | <a href="/login">Login</a></nav>
<article><h1>Looms today</h1><p>{ARTICLE}</p><h2>History</h2><p>{ARTICLE}</p>
<p>See <a href="https://example.com/looms">the loom museum</a>.</p></article>
<footer>Copyright 2026 Loom Corp. All rights reserved. Cookie settings.</footer></body></html>"""


def test_main_text_title_links(tmp_path: Path) -> None:
    (tmp_path / "news.html").write_text(PAGE)
    rows, rejected = read_all(HtmlSource(paths=[str(tmp_path)]))
    assert rejected == []
    (row,) = rows
    assert "row after row" in row["text"]
    assert "Cookie settings" not in row["text"]
    assert row["meta"]["title"] == "Loom news"
    assert row["meta"]["lang"] == "en"
    assert {"href": "https://example.com/looms", "text": "the loom museum"} in row["meta"]["links"]


def test_charset_without_declaration(tmp_path: Path) -> None:
    html = "<html><body><p>Die schöne Frau trinkt Kaffee – köstlich!</p></body></html>"
    (tmp_path / "cp.html").write_bytes(html.encode("cp1252"))
    (tmp_path / "decl.htm").write_bytes(
        '<html><head><meta charset="iso-8859-1"></head><body><p>Café crème</p></body></html>'.encode(
            "latin-1"
        )
    )
    rows, _ = read_all(HtmlSource(paths=[str(tmp_path)]))
    texts = {Path(r["meta"]["path"]).name: r["text"] for r in rows}
    assert "schöne Frau trinkt Kaffee – köstlich" in texts["cp.html"]
    assert "Café crème" in texts["decl.htm"]


def test_chunks_follow_headings(tmp_path: Path) -> None:
    (tmp_path / "news.html").write_text(PAGE)
    rows, _ = read_all(HtmlSource(paths=[str(tmp_path)], chunk={"size": 300, "overlap": 0, "min_size": 10}))
    assert any(r["meta"].get("section") == ["Looms today", "History"] for r in rows)
