"""Decoding shared by the file sources: UTF-16/32 without a BOM, damaged UTF-8, NULs, special files."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genloom.core.steps import StepContext
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.detect import detect_format
from genloom.sources._files.encoding import decode_bytes, sniff_encoding
from genloom.sources._files.text import clean_text
from genloom.sources.csv import CsvSource
from genloom.sources.files import FilesSource
from genloom.sources.json import JsonSource
from genloom.sources.text import TextSource

from .sources_fixtures import read_all

PROSE = "Grüße aus Köln: the loom weaves warp and weft.\nZweite Zeile, naïve café.\n" * 20


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (instead of hanging it) when it blocks, as opening a FIFO does."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"{fn} blocked for {seconds} s (it opened a named pipe?)"
    return out[0]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_bom_are_detected(tmp_path: Path, encoding: str) -> None:
    data = PROSE.encode(encoding)  # the -le/-be codecs write no byte order mark
    assert sniff_encoding(data) == encoding
    assert decode_bytes(data).text == PROSE
    (tmp_path / "notes.txt").write_bytes(data)
    (tmp_path / "NOTES").write_bytes(data)  # no extension: the NUL bytes must not read as binary
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert {Path(r["meta"]["path"]).name for r in rows} == {"notes.txt", "NOTES"}
    for r in rows:
        assert r["meta"]["encoding"] == encoding
        assert r["text"].startswith("Grüße aus Köln: the loom")
        assert "\x00" not in r["text"]


def test_wide_unicode_is_not_seen_in_ascii_utf8_or_binary(tmp_path: Path) -> None:
    rng = random.Random(7)
    not_wide = {
        "ascii": b"plain ascii words\n" * 200,
        "utf8": PROSE.encode(),
        "random": bytes(rng.randrange(256) for _ in range(8192)),
        "zeros": b"\x00" * 8192,
        "int16": struct.pack("<2000H", *range(2000)),  # NULs at odd offsets, but control characters
        "int32": struct.pack("<1000I", *range(1000)),
        "padded": b"".join(b"rec%04d" % i + b"\x00" * 9 for i in range(300)),  # fixed-width records
    }
    for name, data in not_wide.items():
        assert sniff_encoding(data) not in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"), name
        path = tmp_path / name
        path.write_bytes(data)
        if name not in ("ascii", "utf8"):
            assert detect_format(Blob(name, path, name)) == "binary", name
    # ...while the same detector finds Cyrillic UTF-16 (only spaces and punctuation give NULs)
    russian = "Привет, как дела? Всё хорошо, спасибо. " * 30
    assert sniff_encoding(russian.encode("utf-16-le")) == "utf-16-le"
    assert decode_bytes(russian.encode("utf-16-be")).text == russian


def test_damaged_utf8_replaces_only_the_invalid_bytes() -> None:
    # the damage comes first, so the old "3 valid characters before the error" rule missed it
    data = b"\xff" + "Grüße aus Köln, déjà vu.".encode() + b" \xc3( end \xe2\x82"
    decoded = decode_bytes(data)
    assert decoded.encoding == "utf-8"
    assert decoded.text == "\ufffdGrüße aus Köln, déjà vu. \ufffd( end \ufffd"
    assert decoded.invalid == 3
    # a cp1252 file (no valid multi-byte character at all) is still read as cp1252
    assert decode_bytes("Le café est crème, déjà vu à Noël.".encode("cp1252")) == (
        "Le café est crème, déjà vu à Noël.",
        "cp1252",
        0,
    )


def test_damaged_utf8_is_counted_per_record_in_text_csv_and_json(tmp_path: Path) -> None:
    good = "Grüße aus Köln. " * 10
    (tmp_path / "t.txt").write_bytes(f"{good}\n\nsecond paragraph".encode() + b" bad\xff\xfe byte\n")
    rows, rejected = read_all(TextSource(paths=[str(tmp_path / "t.txt")]))
    assert rejected == []
    assert rows[0]["text"] == f"{good.strip()}\n\nsecond paragraph bad\ufffd\ufffd byte"
    assert rows[0]["meta"]["invalid_bytes"] == 2
    assert rows[0]["meta"]["encoding"] == "utf-8"

    (tmp_path / "c.csv").write_bytes(
        b"name,city\n" + "Jürgen,Köln\n".encode() * 5 + b"Ren\xe9,Paris\n" + "Zoë,Zürich\n".encode()
    )
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path / "c.csv")]))
    assert rejected == []
    assert [r["name"] for r in rows] == ["Jürgen"] * 5 + ["Ren\ufffd", "Zoë"]
    assert [r["meta"].get("invalid_bytes") for r in rows] == [None] * 5 + [1, None]

    lines = [json.dumps({"text": "Grüße aus Köln"}, ensure_ascii=False).encode() for _ in range(4)]
    lines.append(b'{"text": "caf\xe9 cr\xe8me"}')
    (tmp_path / "j.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows, rejected = read_all(JsonSource(paths=[str(tmp_path / "j.jsonl")]))
    assert rejected == []
    assert rows[-1]["text"] == "caf\ufffd cr\ufffdme"
    assert [r["meta"].get("invalid_bytes") for r in rows] == [None] * 4 + [2]


def test_nuls_are_removed_and_counted(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes("Grüße\x00 aus\x00 Köln\x00\x00.\n\n\x00\x00\n".encode())
    rows, _ = read_all(TextSource(paths=[str(tmp_path / "t.txt")]))
    assert [r["text"] for r in rows] == ["Grüße aus Köln."]
    assert rows[0]["meta"]["nul_removed"] == 4  # the NUL-only line is blank and dropped

    (tmp_path / "c.csv").write_bytes(b"title,body\nA\x00B,one\nplain,row\nC,t\x00w\x00o\n")
    rows, rejected = read_all(CsvSource(paths=[str(tmp_path / "c.csv")], text_template="{title}: {body}"))
    assert rejected == []
    assert [r["text"] for r in rows] == ["AB: one", "plain: row", "C: two"]
    assert [r["title"] for r in rows] == ["AB", "plain", "C"]
    assert [r["meta"].get("nul_removed") for r in rows] == [1, None, 2]

    (tmp_path / "j.jsonl").write_text('{"text": "a\\u0000b"}\n{"text": "clean"}\n')
    rows, _ = read_all(JsonSource(paths=[str(tmp_path / "j.jsonl")]))
    assert [r["text"] for r in rows] == ["ab", "clean"]
    assert [r["meta"].get("nul_removed") for r in rows] == [1, None]

    # documents (PDF, DOCX, HTML...) go through clean_text and emit_document: counted there too
    blob = Blob("doc.pdf", tmp_path / "doc.pdf", "doc.pdf")
    src = TextSource(paths=[str(tmp_path)])
    blocks = [Block(clean_text("Page\x00 one \x00text")), Block(clean_text("\x00\x00"))]
    (record,) = src.emit_document(blob, blocks, {"title": clean_text("A\x00 title")})
    assert record["text"] == "Page one text"
    assert record["meta"]["title"] == "A title"
    assert record["meta"]["nul_removed"] == 3  # a block of NULs alone is blank: dropped like whitespace


def test_special_files_are_rejected_without_opening(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("a regular file")
    os.mkfifo(tmp_path / "pipe.txt")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp_path / "sock"))
        src = FilesSource(paths=[str(tmp_path)])
        parts = src.partitions()
        assert [Path(p).name for p in parts] == ["good.txt", "pipe.txt", "sock"]
        fps = _within(10, lambda: [src.partition_fingerprint(p) for p in parts])
        assert fps[1:] == ["special:named pipe", "special:socket"]
        assert fps[0].startswith(f"{len('a regular file')}:")
        ctx = StepContext()
        rows = _within(10, lambda: [t for p in parts for t in src.run_partition(p, ctx)])
        assert sum(t.num_rows for t in rows) == 1
        got = {(Path(r["location"]).name, r["reason"], r["detail"]) for r in ctx.rejected}
        assert got == {("pipe.txt", "not_regular_file", "named pipe"), ("sock", "not_regular_file", "socket")}
    finally:
        sock.close()
    # a device named directly is listed and rejected the same way
    dev = FilesSource(paths=["/dev/null"])
    assert dev.partitions() == ["/dev/null"]
    assert dev.partition_fingerprint("/dev/null") == "special:character device"
    _, rejected = read_all(dev)
    assert [(r["reason"], r["detail"]) for r in rejected] == [("not_regular_file", "character device")]


def test_files_read_names_the_chunk_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = Tokenizer(WordLevel({"[UNK]": 0, "loom": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    (tmp_path / "model").mkdir()
    tok.save(str(tmp_path / "model" / "tokenizer.json"))
    chunk = {"unit": "tokens", "size": 64, "overlap": 8, "min_size": 8}
    by_file = TextSource(
        paths=[str(tmp_path)], chunk={**chunk, "tokenizer": str(tmp_path / "model/tokenizer.json")}
    )
    by_folder = FilesSource(paths=[str(tmp_path)], chunk={**chunk, "tokenizer": str(tmp_path / "model")})
    assert by_file.files_read() == [str(tmp_path / "model" / "tokenizer.json")]
    assert by_folder.files_read() == [str(tmp_path / "model" / "tokenizer.json")]
    assert TextSource(paths=[str(tmp_path)], chunk={"size": 500}).files_read() == []
