"""Discovery, format detection, archives, fingerprints and chunking shared by the file sources."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from genloom.core.errors import ConfigError
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block, ChunkConfig, chunk_blocks
from genloom.sources._files.detect import detect_format
from genloom.sources._files.discover import discover, file_fingerprint, glob_regex
from genloom.sources._files.encoding import decode_bytes
from genloom.sources.files import FilesSource

from .sources_fixtures import make_docx, read_all


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("one")
    (root / "a" / "b" / "two.md").write_text("# two")
    (root / "a" / "b" / "skip.log").write_text("log")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("no")
    (root / "top.csv").write_text("x,y\n1,2\n")


def test_glob_regex() -> None:
    assert glob_regex("**/*.txt").match("a/b/c.txt")
    assert glob_regex("**/*.txt").match("c.txt")
    assert not glob_regex("*.txt").match("a/c.txt")
    assert glob_regex("data/[ab]?.csv").match("data/a1.csv")


def test_discover_globs_include_exclude_hidden(tmp_path: Path) -> None:
    _tree(tmp_path)
    base = tmp_path.as_posix()
    found = discover([f"{base}/**/*"], [], [])
    names = [Path(f).name for f in found]
    assert names == sorted(names, key=lambda n: found[names.index(n)])  # sorted by path
    assert set(names) == {"one.txt", "two.md", "skip.log", "top.csv"}
    assert [Path(f).name for f in discover([base], ["*.txt", "*.md"], [])] == [
        "two.md",
        "one.txt",
    ]  # sorted by full path: a/b/ before a/one
    assert "skip.log" not in {Path(f).name for f in discover([base], [], ["**/*.log"])}
    assert "secret.txt" in {Path(f).name for f in discover([base], [], [], hidden=True)}
    # a file path and a duplicate glob give each file once
    assert len(discover([f"{base}/top.csv", f"{base}/*.csv"], [], [])) == 1


def test_discover_survives_symlink_loop(tmp_path: Path) -> None:
    _tree(tmp_path)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    found = discover([tmp_path.as_posix()], ["*.txt"], [])
    assert [Path(f).name for f in found] == ["one.txt"]


def test_detect_format_by_content(tmp_path: Path) -> None:
    docx = make_docx(tmp_path / "real.docx")
    named_doc = tmp_path / "looks-old.doc"
    named_doc.write_bytes(docx.read_bytes())
    assert detect_format(Blob("x", named_doc, named_doc.name)) == "docx"
    fake = tmp_path / "random.docx"
    fake.write_bytes(os.urandom(2048))
    assert detect_format(Blob("x", fake, fake.name)) == "mismatch"
    html = tmp_path / "page.txt"
    html.write_text("<!DOCTYPE html><html><body>hi</body></html>")
    assert detect_format(Blob("x", html, html.name)) == "html"
    noext = tmp_path / "README"
    noext.write_text("plain words")
    assert detect_format(Blob("x", noext, noext.name)) == "text"


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("one")
    first = file_fingerprint(str(f))
    assert file_fingerprint(str(f)) == first
    f.write_text("two!")
    assert file_fingerprint(str(f)) != first
    src = FilesSource(paths=[str(tmp_path)])
    fp = src.fingerprint()
    (tmp_path / "b.txt").write_text("new file")
    assert src.fingerprint() != fp


def test_check_names_the_paths_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        FilesSource(paths=[f"{tmp_path}/*.nothing"]).check("sources.0")
    assert e.value.path == "sources.0.paths"
    with pytest.raises(ConfigError) as e:
        FilesSource(paths=[str(tmp_path)], options={"pdff": {}}).check("sources.0")
    assert "did you mean 'pdf'" in str(e.value)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ConfigError) as e:
        FilesSource(paths=[str(tmp_path)], options={"pdf": {"ocr": "maybe"}}).check("sources.0")
    assert e.value.path == "sources.0.options.pdf.ocr"


def test_decode_bytes() -> None:
    assert decode_bytes("café crème".encode("cp1252"))[0] == "café crème"
    assert decode_bytes("Привет, как дела? Хорошо.".encode("cp1251"))[0].startswith("Привет")
    assert decode_bytes("naïve".encode("utf-16"))[0] == "naïve"


def test_chunks_follow_structure_with_overlap() -> None:
    blocks = [Block("Intro " + "word " * 30, ("Intro",))]
    blocks += [Block(f"Para {i} " + "text " * 40, ("Body", "Part")) for i in range(6)]
    chunks = list(chunk_blocks(blocks, ChunkConfig(size=500, overlap=50, min_size=100)))
    assert chunks[0][1]["section"] == ["Intro"]  # a new section starts a new chunk
    assert all(len(t) <= 500 + 60 for t, _ in chunks)
    assert [m["chunk"] for _, m in chunks] == list(range(len(chunks)))
    # the start of chunk k+1 repeats the end of chunk k
    t1, t2 = chunks[1][0], chunks[2][0]
    assert t2.startswith(t1[-30:].split(" ", 1)[1][:10])
    # a paragraph longer than the target is cut at sentence ends
    long = [Block("Sentence number one is here. " * 100)]
    assert len(list(chunk_blocks(long, ChunkConfig(size=300, overlap=0)))) > 5


def _tiny_tokenizer(path: Path, corpus: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    tok.save(str(path / "tokenizer.json"))
    return path / "tokenizer.json"


def test_chunks_sized_in_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    blocks = [
        Block(f"Paragraph {i}. " + "The loom weaves threads into cloth. " * (3 + i % 5)) for i in range(12)
    ]
    blocks.append(Block("One very long paragraph without a break. " * 60))
    path = _tiny_tokenizer(tmp_path, [b.text for b in blocks])
    cfg = ChunkConfig(size=64, overlap=8, min_size=0, unit="tokens", tokenizer=str(tmp_path))
    chunks = list(chunk_blocks(blocks, cfg))
    tok = Tokenizer.from_file(str(path))
    counts = [len(tok.encode(t, add_special_tokens=False).ids) for t, _ in chunks]
    assert len(chunks) > 10 and max(counts) <= 64  # the size is a hard limit in tokens
    assert [m["tokens"] for _, m in chunks] == counts
    assert sum(counts) / len(counts) > 32  # and chunks are filled, not tiny
    body = " ".join(" ".join(b.text.split()) for b in blocks)
    assert all(" ".join(t.split())[-20:] in body for t, _ in chunks)  # nothing invented
    # the next chunk starts with the last few tokens of the previous one
    assert chunks[2][0].split()[0] in chunks[1][0].split()[-8:]


def test_token_chunks_need_a_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        ChunkConfig(unit="tokens")
    with pytest.raises(ValueError, match="no tokenizer.json"):
        ChunkConfig(unit="tokens", tokenizer=str(tmp_path))
    with pytest.raises(ValueError, match="overlap"):
        ChunkConfig(size=100, overlap=100)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_archives_are_read_transparently(tmp_path: Path) -> None:
    inner = _zip_bytes({"deep/note.txt": b"inside a nested zip"})
    (tmp_path / "bundle.zip").write_bytes(
        _zip_bytes({"a.txt": b"alpha text", "b.csv": b"k,v\n1,2\n", "n.zip": inner})
    )
    with tarfile.open(tmp_path / "pack.tar.gz", "w:gz") as tf:
        data = b"tarred words"
        info = tarfile.TarInfo("docs/t.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with gzip.open(tmp_path / "table.csv.gz", "wb") as f:
        f.write(b"name,score\nann,3\nbob,4\n")
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert rejected == []
    ids = {r["id"] for r in rows}
    base = tmp_path.as_posix()
    assert f"text:{base}/bundle.zip!a.txt" in ids
    assert f"text:{base}/bundle.zip!n.zip!deep/note.txt" in ids
    assert f"csv:{base}/bundle.zip!b.csv#row=0" in ids
    assert f"text:{base}/pack.tar.gz!docs/t.txt" in ids
    assert {r["text"] for r in rows if r["id"].startswith(f"csv:{base}/table.csv.gz!table.csv")} == {
        "name: ann; score: 3",
        "name: bob; score: 4",
    }


def test_zip_bomb_is_quarantined_not_unpacked(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.txt", b"\0" * 50_000_000)
    (tmp_path / "bomb.zip").write_bytes(buf.getvalue())
    (tmp_path / "good.txt").write_text("still read")
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert [r["text"] for r in rows] == ["still read"]
    assert [r["reason"] for r in rejected] == ["zip_bomb"]
    assert "ratio" in rejected[0]["detail"]
    # too many members and too much data are limits too
    many = _zip_bytes({f"f{i}.txt": b"x" for i in range(20)})
    (tmp_path / "bomb.zip").write_bytes(many)
    _, rejected = read_all(FilesSource(paths=[str(tmp_path)], archives={"max_members": 10}))
    assert [r["reason"] for r in rejected] == ["zip_bomb"]
