"""File formats declare themselves: a new reader is one file, and the declarations stay coherent."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from genloom.core.registry import SOURCES
from genloom.sources._files.archives import ARCHIVE_EXTENSIONS
from genloom.sources._files.base import FileSource
from genloom.sources._files.blob import Blob
from genloom.sources._files.chunking import Block
from genloom.sources._files.detect import UNSUPPORTED_EXTENSIONS, declares_format, detect_format, tables
from genloom.sources.files import FilesSource, readers

from .sources_fixtures import read_all


class TinySource(FileSource):
    """A made-up format: ``TINY1`` then text, in ``.tiny`` files."""

    type: Literal["tiny_test_format"] = "tiny_test_format"
    #: put in front of every record's text (shows that per-format options reach the reader)
    prefix: str = ""

    formats: ClassVar[tuple[str, ...]] = ("tiny_test_format",)
    default_include: ClassVar[tuple[str, ...]] = ("*.tiny",)
    extensions: ClassVar[tuple[str, ...]] = ("tiny",)
    magic: ClassVar[tuple[bytes, ...]] = (b"TINY1\n",)
    signature_required: ClassVar[bool] = True

    def read_file(self, blob: Blob) -> Iterator[Any]:
        body = blob.read_bytes()[len(b"TINY1\n") :].decode("utf-8")
        yield from self.emit_document(blob, [Block(self.prefix + body)], {})


class TinyBundleSource(FileSource):
    """A made-up ZIP-based format: a ZIP holding ``tiny/manifest.txt``."""

    type: Literal["tiny_test_bundle"] = "tiny_test_bundle"

    formats: ClassVar[tuple[str, ...]] = ("tiny_test_bundle",)
    zip_members: ClassVar[tuple[tuple[str, ...], ...]] = (("tiny/manifest.txt",),)

    def read_file(self, blob: Blob) -> Iterator[Any]:
        with zipfile.ZipFile(blob.path) as z:
            text = z.read("tiny/manifest.txt").decode("utf-8")
        yield from self.emit_document(blob, [Block(text)], {})


@pytest.fixture
def tiny_formats(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """TinySource and TinyBundleSource registered for one test (the registry has no unregister)."""
    SOURCES.names()  # the built-in sources first, so the test ones are additions
    monkeypatch.setitem(SOURCES._items, "tiny_test_format", TinySource)
    monkeypatch.setitem(SOURCES._items, "tiny_test_bundle", TinyBundleSource)
    return monkeypatch


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_a_registered_format_is_read_by_files_with_nothing_else_changed(
    tmp_path: Path, tiny_formats: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.tiny").write_bytes(b"TINY1\nwarp and weft")
    (tmp_path / "renamed.dat").write_bytes(b"TINY1\nfound by its magic bytes")  # no known extension
    (tmp_path / "fake.tiny").write_bytes(b"not tiny at all")  # named .tiny, no signature
    (tmp_path / "bundle.zip").write_bytes(_zip({"tiny/manifest.txt": "a bundle, not an archive"}))
    (tmp_path / "notes.txt").write_text("plain text stays text")

    assert {"tiny_test_format", "tiny_test_bundle"} <= set(readers())
    rows, rejected = read_all(
        FilesSource(paths=[str(tmp_path)], options={"tiny_test_format": {"prefix": "> "}})
    )
    by_path = {Path(r["meta"]["path"]).name: r for r in rows}
    assert by_path["a.tiny"]["id"] == f"tiny_test_format:{tmp_path / 'a.tiny'}"
    assert by_path["a.tiny"]["text"] == "> warp and weft"
    assert by_path["renamed.dat"]["source"] == "tiny_test_format"
    assert by_path["bundle.zip"]["source"] == "tiny_test_bundle"
    assert by_path["bundle.zip"]["text"] == "a bundle, not an archive"
    assert by_path["notes.txt"]["source"] == "text"
    assert [(Path(r["location"]).name, r["reason"]) for r in rejected] == [("fake.tiny", "corrupt")]
    assert rejected[0]["id"].startswith("tiny_test_format:")  # the extension names the format

    only, _ = read_all(FilesSource(paths=[str(tmp_path)], formats_only=["text"]))
    assert [Path(r["meta"]["path"]).name for r in only] == ["notes.txt"]

    tiny_formats.undo()  # unregistered: detection forgets the format
    assert "tiny_test_format" not in readers()
    blob = Blob(str(tmp_path / "a.tiny"), tmp_path / "a.tiny", "a.tiny")
    assert detect_format(blob) == "text"


def _file_sources() -> list[tuple[str, type]]:
    return [(n, c) for n, c in SOURCES.items() if isinstance(c, type) and issubclass(c, FileSource)]


def test_every_file_format_declares_an_extension_or_a_signature() -> None:
    for name, cls in _file_sources():
        if name == "files":  # reads every format through the others; declares none itself
            assert not declares_format(cls)
            continue
        signatures = cls.magic or cls.zip_mimetypes or cls.zip_members or cls.ole_streams
        assert cls.extensions or signatures, f"{name} declares no extension and no signature"
        assert cls.formats == (name,), f"{name} reads formats {cls.formats}, registered as {name!r}"
        if cls.signature_required:
            assert signatures, f"{name} requires a signature but declares none"
        assert all(e == e.lower() and not e.startswith(".") for e in cls.extensions), name
    assert set(readers()) == {n for n, _ in _file_sources()} - {"files"}


def test_no_two_formats_claim_an_extension_unless_the_content_decides() -> None:
    claims: dict[str, list[str]] = {}
    for name, cls in tables().readers.items():
        for ext in cls.extensions:
            claims.setdefault(ext, []).append(name)
    for ext, names in claims.items():
        if len(names) > 1:  # allowed only when each file carries its format's signature
            assert all(tables().readers[n].signature_required for n in names), (ext, names)
    # today no extension is shared at all, none is an archive's, none is one we decline
    assert all(len(names) == 1 for names in claims.values()), claims
    assert not set(claims) & set(ARCHIVE_EXTENSIONS)
    assert not set(claims) & UNSUPPORTED_EXTENSIONS


def test_shared_names_are_resolved_by_content(tmp_path: Path) -> None:
    """``.txt`` is plain text's alone and ``.xml`` nobody's: the content decides between text and HTML."""
    assert tables().extensions["txt"] == "text"
    assert "xml" not in tables().extensions
    cases = {
        "page.txt": (b"<!DOCTYPE html><html><body>hi</body></html>", "html"),
        "notes.txt": (b"just words", "text"),
        "page.xml": (b'<?xml version="1.0"?>\n<html><body>hi</body></html>', "html"),
        "data.xml": (b'<?xml version="1.0"?><rows><row/></rows>', "text"),
        "message": (b"Received: from mx.example.com\nSubject: hi\n\nbody", "eml"),
        "report.txt": (b"%PDF-1.7\n", "pdf"),  # a signature beats the name
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert detect_format(Blob(name, tmp_path / name, name)) == expected, name


@pytest.mark.parametrize("name", sorted(tables().readers))
def test_a_file_named_for_a_format_without_its_signature_is_that_format_or_a_mismatch(
    tmp_path: Path, name: str
) -> None:
    cls = tables().readers[name]
    for ext in cls.extensions:
        path = tmp_path / f"plain.{ext}"
        path.write_bytes(b"just some words, no signature\n")
        expected = "mismatch" if cls.signature_required else name
        assert detect_format(Blob(path.name, path, path.name)) == expected, ext
