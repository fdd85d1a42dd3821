"""EPUB, Outlook MSG, ODP, legacy PPT and password-protected OOXML, on files built by the tests.

The OLE2 files (MSG, PPT) are written with extract-msg's ``OleWriter``, a [MS-CFB] compound-file
writer; their streams follow [MS-OXMSG] and [MS-PPT]. Encrypted Office files are made with
msoffcrypto-tool's ECMA-376 Agile encryption, as Office writes them.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from genloom.sources._files.blob import Blob
from genloom.sources._files.detect import detect_format
from genloom.sources.epub import EpubSource
from genloom.sources.excel import ExcelSource
from genloom.sources.files import FilesSource
from genloom.sources.odp import OdpSource
from genloom.sources.ppt import PptSource

from .sources_fixtures import make_docx, make_pptx, make_xlsx, read_all

# --------------------------------------------------------------------------------------------
# EPUB

CONTAINER_XML = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""

OPF = """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="uid">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="uid">urn:uuid:1234</dc:identifier>
    <dc:title>The Loom Book</dc:title>
    <dc:creator>Ada Lovelace</dc:creator>
    <dc:creator>Joseph Jacquard</dc:creator>
    <dc:language>en</dc:language>
  </metadata>
  <manifest>
    <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
    <item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/>
    <item id="c2" href="text/chapter%202.xhtml" media-type="application/xhtml+xml"/>
    <item id="css" href="style.css" media-type="text/css"/>
  </manifest>
  <spine><itemref idref="nav" linear="no"/><itemref idref="c2"/><itemref idref="c1"/></spine>
</package>"""

NAV = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>
<nav epub:type="toc"><ol><li><a href="text/ch1.xhtml">Table of contents entry</a></li></ol></nav>
</body></html>"""

CH_THREADS = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>ignored title</title>
<style>p { color: red }</style></head><body>
<h1>Threads</h1>
<p>Cotton&nbsp;and <em>wool</em><a id="n1"/> make&#160;cloth.<br/>A second line.</p>
<ul><li>warp<ul><li>sized warp</li></ul></li><li>weft</li></ul>
<h2>Warp</h2>
<div>Loose text in a div. <p>A paragraph inside it.</p> Tail text.</div>
<script>var hidden = "never read";</script>
</body></html>"""

CH_LOOMS = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><body>
<section><h1>Looms</h1>
<table><tr><th>Loom</th><th>Shafts</th></tr><tr><td>table loom</td><td>4</td></tr></table>
<p>Looms come first in this book.</p></section>
</body></html>"""


def make_epub(path: Path, encryption: str | None = None, with_mimetype: bool = True) -> Path:
    """An EPUB 3: the spine puts chapter 2 before chapter 1 and lists the nav document."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        if with_mimetype:
            z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # stored, first
        z.writestr("META-INF/container.xml", CONTAINER_XML)
        if encryption is not None:
            z.writestr("META-INF/encryption.xml", encryption)
        z.writestr("OEBPS/content.opf", OPF)
        z.writestr("OEBPS/nav.xhtml", NAV)
        z.writestr("OEBPS/text/ch1.xhtml", CH_THREADS)
        z.writestr("OEBPS/text/chapter 2.xhtml", CH_LOOMS)
        z.writestr("OEBPS/style.css", "p { margin: 0 }")
    return path


def _encryption_xml(algorithm: str, uri: str) -> str:
    return f"""<?xml version="1.0"?>
<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
 xmlns:enc="http://www.w3.org/2001/04/xmlenc#">
  <enc:EncryptedData><enc:EncryptionMethod Algorithm="{algorithm}"/>
    <enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData>
</encryption>"""


def test_epub_spine_order_structure_and_metadata(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "loom.epub")
    rows, rejected = read_all(EpubSource(paths=[str(tmp_path)]))
    assert rejected == []
    (row,) = rows
    assert row["id"] == f"epub:{path.as_posix()}"
    text = row["text"]
    assert text.index("Looms") < text.index("Threads")  # spine order, not file order
    assert "| Loom | Shafts |\n|---|---|\n| table loom | 4 |" in text
    assert "Cotton and wool make cloth.\nA second line." in text  # &nbsp; decoded, <a/> kept inline
    assert "- warp\n\n  - sized warp\n\n- weft" in text
    assert "Loose text in a div.\n\nA paragraph inside it.\n\nTail text." in text
    for absent in ("never read", "ignored title", "Table of contents entry", "color: red"):
        assert absent not in text
    meta = row["meta"]
    assert meta["title"] == "The Loom Book"
    assert meta["author"] == "Ada Lovelace, Joseph Jacquard"
    assert (meta["language"], meta["chapters"], meta["format"]) == ("en", 2, "epub")
    chunks, _ = read_all(EpubSource(paths=[str(tmp_path)], chunk={"size": 100, "overlap": 0, "min_size": 10}))
    sections = [c["meta"].get("section") for c in chunks]
    assert ["Looms"] in sections and ["Threads", "Warp"] in sections


def test_epub_drm_is_encrypted_but_font_obfuscation_is_read(tmp_path: Path) -> None:
    adept = _encryption_xml("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "OEBPS/text/ch1.xhtml")
    make_epub(tmp_path / "drm.epub", encryption=adept)
    fonts = _encryption_xml("http://www.idpf.org/2008/embedding", "OEBPS/fonts/serif.otf")
    make_epub(tmp_path / "fonts.epub", encryption=fonts)
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert [(Path(r["location"]).name, r["reason"]) for r in rejected] == [("drm.epub", "encrypted")]
    assert "aes128-cbc" in rejected[0]["detail"]
    assert [Path(r["meta"]["path"]).name for r in rows] == ["fonts.epub"]


def test_epub_detected_by_content_and_broken_ones_quarantined(tmp_path: Path) -> None:
    make_epub(tmp_path / "book.zip")  # the mimetype member decides, not the name
    make_epub(tmp_path / "no-mimetype.epub", with_mimetype=False)
    with zipfile.ZipFile(tmp_path / "no-opf.epub", "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr("META-INF/container.xml", CONTAINER_XML)
    (tmp_path / "fake.epub").write_bytes(b"not a zip at all" * 10)
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert sorted(Path(r["meta"]["path"]).name for r in rows) == ["book.zip", "no-mimetype.epub"]
    assert {r["source"] for r in rows} == {"epub"}
    got = {Path(r["location"]).name: r["reason"] for r in rejected}
    assert got == {"no-opf.epub": "corrupt", "fake.epub": "corrupt"}


# --------------------------------------------------------------------------------------------
# Outlook MSG, written as an OLE2 compound file of MAPI property streams


def _u16(s: str) -> bytes:
    return s.encode("utf-16-le")


def _filetime(when: dt.datetime) -> int:
    return int((when - dt.datetime(1601, 1, 1, tzinfo=dt.UTC)).total_seconds() * 10**7)


def _property_stream(header: bytes, fixed: list[tuple[int, int]], strings: dict[int, str]) -> bytes:
    """A ``__properties_version1.0`` stream: fixed-size values inline, strings by size ([MS-OXMSG] 2.4)."""
    out = bytearray(header)
    for tag, value in fixed:
        out += struct.pack("<IIQ", tag, 6, value)
    for prop_id, s in strings.items():
        out += struct.pack("<IIII", (prop_id << 16) | 0x001F, 6, len(_u16(s)) + 2, 0)
    return bytes(out)


# (file name, bytes) or (file name, a function writing an embedded message under a storage path)
Attachment = tuple[str, bytes | Callable[[Any, list[str]], None]]


def _write_message(
    w: Any,
    root: list[str],
    subject: str,
    body: str,
    attachments: Sequence[Attachment] = (),
    top: bool = True,
) -> None:
    """One message under ``root``: sender, one To recipient, body, attachments (bytes or embedded)."""
    strings = {
        0x001A: "IPM.Note",  # message class
        0x0037: subject,
        0x0C1A: "Ada Lovelace",  # sender name
        0x5D01: "ada@example.com",  # sender SMTP address
        0x0E04: "Bob",  # display To
        0x1000: body,
        0x1035: f"<{subject.split()[0].lower()}-1@example.com>",  # Internet message id
    }
    for prop_id, s in strings.items():
        w.addEntry([*root, f"__substg1.0_{prop_id:04X}001F"], _u16(s))
    when = _filetime(dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC))
    n = len(attachments)
    # the top-level header has 8 more reserved bytes than an embedded message's
    header = struct.pack("<8sIIII", b"", 1, n, 1, n) + (b"\0" * 8 if top else b"")
    fixed = [(0x00390040, when), (0x0E060040, when)]  # client submit time, delivery time
    w.addEntry([*root, "__properties_version1.0"], _property_stream(header, fixed, strings))
    recip = [*root, "__recip_version1.0_#00000000"]
    w.addEntry(recip, storage=True)
    recip_strings = {0x3001: "Bob", 0x3003: "bob@example.com", 0x39FE: "bob@example.com"}
    for prop_id, s in recip_strings.items():
        w.addEntry([*recip, f"__substg1.0_{prop_id:04X}001F"], _u16(s))
    w.addEntry(
        [*recip, "__properties_version1.0"], _property_stream(b"\0" * 8, [(0x0C150003, 1)], recip_strings)
    )
    for i, (name, data) in enumerate(attachments):
        att = [*root, f"__attach_version1.0_#{i:08X}"]
        w.addEntry(att, storage=True)
        att_strings = {0x3707: name, 0x3001: name}  # long file name, display name
        for prop_id, s in att_strings.items():
            w.addEntry([*att, f"__substg1.0_{prop_id:04X}001F"], _u16(s))
        if isinstance(data, bytes):
            w.addEntry([*att, "__substg1.0_37010102"], data)
            method = 1  # ATTACH_BY_VALUE
        else:
            w.addEntry([*att, "__substg1.0_3701000D"], storage=True)
            data(w, [*att, "__substg1.0_3701000D"])
            method = 5  # ATTACH_EMBEDDED_MSG
        fixed_att = [(0x37050003, method), (0x0E210003, i)]
        w.addEntry([*att, "__properties_version1.0"], _property_stream(b"\0" * 8, fixed_att, att_strings))


def make_msg(path: Path, attachments: Sequence[Attachment]) -> Path:
    """An Outlook .msg: "Loom delivery" from Ada to Bob, with the given attachments."""
    ole_writer = pytest.importorskip("extract_msg.ole_writer")
    w = ole_writer.OleWriter()
    w.addEntry(["__nameid_version1.0"], storage=True)
    for stream in ("00020102", "00030102", "00040102"):  # GUID, entry and string streams (empty)
        w.addEntry(["__nameid_version1.0", f"__substg1.0_{stream}"], b"")
    _write_message(w, [], "Loom delivery", "The loom arrives on Friday.\r\n\r\nRegards, Ada", attachments)
    w.write(str(path))
    return path


def _forwarded(w: Any, root: list[str]) -> None:
    _write_message(w, root, "Heddle question", "Forwarded text about heddles.", top=False)


def test_msg_headers_body_and_attachments_read_as_files(tmp_path: Path) -> None:
    docx = make_docx(tmp_path / "manual.docx").read_bytes()
    (tmp_path / "in").mkdir()
    attachments: list[Attachment] = [
        ("notes.txt", b"Warp threads run lengthwise."),
        ("manual.docx", docx),
        ("fwd", _forwarded),  # an embedded message
    ]
    mail = make_msg(tmp_path / "in" / "mail.msg", attachments)
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path / "in")]))
    assert rejected == []
    by_id = {r["id"]: r for r in rows}
    key = mail.as_posix()
    main = by_id[f"msg:{key}"]
    assert main["text"] == "Loom delivery\n\nThe loom arrives on Friday.\n\nRegards, Ada"
    meta = main["meta"]
    assert meta["subject"] == "Loom delivery"
    assert meta["from"] == "Ada Lovelace <ada@example.com>"
    assert meta["to"] == "Bob <bob@example.com>"
    assert meta["date"] == "2026-11-24T10:00:00+00:00"
    assert meta["message_id"] == "<loom-1@example.com>"
    assert meta["attachments"] == ["notes.txt", "manual.docx", "fwd.msg"]
    assert by_id[f"text:{key}!notes.txt"]["text"] == "Warp threads run lengthwise."
    assert by_id[f"docx:{key}!manual.docx"]["meta"]["title"] == "Loom manual"
    inner = by_id[f"msg:{key}!fwd.msg"]
    assert inner["text"] == "Heddle question\n\nForwarded text about heddles."
    no_attachments, _ = read_all(FilesSource(paths=[str(mail)], options={"msg": {"attachments": False}}))
    assert [r["id"] for r in no_attachments] == [f"msg:{key}"]


def test_msg_found_by_content_and_text_named_msg_stays_text(tmp_path: Path) -> None:
    make_msg(tmp_path / "mail.bin", [])
    (tmp_path / "de.msg").write_text('::msgcat::mcset de "Open" "Öffnen"\n', encoding="utf-8")
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert sorted((Path(r["meta"]["path"]).name, r["source"]) for r in rows) == [
        ("de.msg", "text"),
        ("mail.bin", "msg"),
    ]


def test_msg_root_streams_decide_not_an_attached_encrypted_workbook(tmp_path: Path) -> None:
    """An encrypted XLSX attached to a message puts ``EncryptedPackage`` inside the .msg: the
    message is still a message (its root streams decide), and the attachment is decrypted."""
    locked = _encrypt(make_xlsx(tmp_path / "cups.xlsx"), "loom-secret")
    mail = make_msg(tmp_path / "mail.msg", [("cups.xlsx", locked.read_bytes())])
    locked.unlink()
    assert detect_format(Blob(str(mail), mail, mail.name)) == "msg"
    rows, rejected = read_all(FilesSource(paths=[str(mail)], password="loom-secret"))
    assert rejected == []
    assert [r["source"] for r in rows] == ["msg", "excel"]
    assert "| Leafs | TOR | 13 |" in rows[1]["text"]


# --------------------------------------------------------------------------------------------
# ODP

ODP_CONTENT = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" office:version="1.2">
<office:body><office:presentation>
<draw:page draw:name="page1">
  <draw:frame presentation:class="subtitle" svg:x="2cm" svg:y="8cm"><draw:text-box>
    <text:p>An introduction</text:p></draw:text-box></draw:frame>
  <draw:frame presentation:class="title" svg:x="2cm" svg:y="1cm"><draw:text-box>
    <text:p>Weaving 101</text:p></draw:text-box></draw:frame>
  <draw:frame presentation:class="outline" presentation:placeholder="true" svg:y="12cm">
    <draw:text-box/></draw:frame>
  <presentation:notes><draw:page-thumbnail/>
    <draw:frame presentation:class="notes"><draw:text-box><text:p>Greet the class.</text:p>
    </draw:text-box></draw:frame></presentation:notes>
</draw:page>
<draw:page draw:name="page2"/>
<draw:page draw:name="page3">
  <draw:frame presentation:class="title" svg:y="0.5in"><draw:text-box><text:p>Parts</text:p></draw:text-box></draw:frame>
  <draw:frame svg:y="3in"><table:table>
    <table:table-row><table:table-cell><text:p>Part</text:p></table:table-cell>
      <table:table-cell><text:p>Use</text:p></table:table-cell></table:table-row>
    <table:table-row><table:table-cell><text:p>shuttle</text:p></table:table-cell>
      <table:table-cell><text:p>carries the weft</text:p></table:table-cell></table:table-row>
  </table:table></draw:frame>
  <draw:g><draw:custom-shape svg:y="2in"><text:p>A loom has many parts.</text:p></draw:custom-shape></draw:g>
  <draw:frame presentation:class="outline" svg:y="5in"><draw:text-box>
    <text:list><text:list-item><text:p>warp</text:p></text:list-item>
    <text:list-item><text:p>weft</text:p></text:list-item></text:list></draw:text-box></draw:frame>
</draw:page>
</office:presentation></office:body></office:document-content>"""


def make_odp(path: Path) -> Path:
    """Three slides: a title slide with notes, an empty slide, a slide with a group, a table and a list."""
    meta = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta><dc:title>Weaving deck</dc:title>
<dc:creator>Ada</dc:creator></office:meta></office:document-meta>"""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.presentation")
        z.writestr("content.xml", ODP_CONTENT)
        z.writestr("meta.xml", meta)
    return path


def test_odp_slides_in_reading_order_with_tables_lists_notes(tmp_path: Path) -> None:
    path = make_odp(tmp_path / "deck.odp")
    rows, rejected = read_all(OdpSource(paths=[str(tmp_path)]))
    assert rejected == []
    assert [r["id"] for r in rows] == [f"odp:{path.as_posix()}#page=1", f"odp:{path.as_posix()}#page=3"]
    first, third = rows
    assert first["text"] == "Weaving 101\n\nAn introduction\n\nNotes:\nGreet the class."
    assert first["meta"]["section"] == ["Weaving 101"]
    assert (first["meta"]["title"], first["meta"]["author"], first["meta"]["slides"]) == (
        "Weaving deck",
        "Ada",
        3,
    )
    assert third["text"] == (
        "Parts\n\nA loom has many parts.\n\n| Part | Use |\n|---|---|\n| shuttle | carries the weft |"
        "\n\n- warp\n\n- weft"
    )
    no_notes, _ = read_all(FilesSource(paths=[str(tmp_path)], options={"odp": {"notes": False}}))
    assert no_notes[0]["text"] == "Weaving 101\n\nAn introduction" and no_notes[0]["source"] == "odp"


# --------------------------------------------------------------------------------------------
# legacy PPT through catppt


def _record(ver_inst: int, rtype: int, body: bytes) -> bytes:
    return struct.pack("<HHI", ver_inst, rtype, len(body)) + body


def make_ppt(path: Path, slides: list[tuple[str, str]], encrypted: bool = False) -> Path:
    """A PowerPoint 97 file: a Document container whose SlideListWithText holds, per slide, a
    SlidePersistAtom, then the title (TextCharsAtom, UTF-16) and body (TextBytesAtom, 8-bit)."""
    ole_writer = pytest.importorskip("extract_msg.ole_writer")
    text = b""
    for i, (title, body) in enumerate(slides):
        text += _record(0, 0x03F3, struct.pack("<IIiII", 0, 0, 0, 256 + i, 0))  # SlidePersistAtom
        text += _record(0, 0x0F9F, struct.pack("<I", 0)) + _record(0, 0x0FA0, _u16(title))  # title
        text += _record(0, 0x0F9F, struct.pack("<I", 1)) + _record(0, 0x0FA8, body.encode("cp1252"))
    document = _record(
        0x000F,
        0x03E8,  # DocumentContainer
        _record(0, 0x03E9, b"\0" * 40) + _record(0x000F, 0x0FF0, text) + _record(0, 0x03EA, b""),
    )
    w = ole_writer.OleWriter()
    w.addEntry(["PowerPoint Document"], document)
    w.addEntry(["Current User"], _record(0, 0x0FF6, b"\0" * 20))
    if encrypted:
        w.addEntry(["EncryptedSummary"], b"\0" * 64)
    w.write(str(path))
    return path


@pytest.mark.skipif(shutil.which("catppt") is None, reason="catppt (Debian package catdoc) is not installed")
def test_ppt_read_by_catppt_one_block_per_slide(tmp_path: Path) -> None:
    path = make_ppt(
        tmp_path / "deck.bin", [("Weaving 101", "An introduction\rto looms"), ("Parts", "Shuttle")]
    )
    make_ppt(tmp_path / "locked.ppt", [("Secret", "text")], encrypted=True)
    (tmp_path / "fake.ppt").write_bytes(b"plain text named ppt" * 20)
    rows, rejected = read_all(FilesSource(paths=[str(tmp_path)]))
    (row,) = rows
    assert (row["id"], row["source"]) == (f"ppt:{path.as_posix()}", "ppt")  # found by content
    assert row["text"] == "Weaving 101\nAn introduction\nto looms\n\nParts\nShuttle"
    assert row["meta"]["converter"] == "catppt"
    got = {Path(r["location"]).name: r["reason"] for r in rejected}
    assert got == {"locked.ppt": "encrypted", "fake.ppt": "corrupt"}
    chunked = PptSource(paths=[str(path)], include=["*.bin"], chunk={"size": 50, "overlap": 0})
    chunks, _ = read_all(chunked)
    assert [c["text"] for c in chunks] == ["Weaving 101\nAn introduction\nto looms", "Parts\nShuttle"]


def test_ppt_without_catppt_is_missing_dependency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_ppt(tmp_path / "deck.ppt", [("Weaving 101", "An introduction")])
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    rows, rejected = read_all(PptSource(paths=[str(tmp_path)]))
    assert rows == []
    assert [r["reason"] for r in rejected] == ["missing_dependency"]
    assert "apt-get install catdoc" in rejected[0]["detail"]


# --------------------------------------------------------------------------------------------
# password-protected OOXML


def _encrypt(path: Path, password: str) -> Path:
    """Encrypt an OOXML file in place (ECMA-376 Agile encryption in an OLE2 EncryptedPackage)."""
    ooxml = pytest.importorskip("msoffcrypto.format.ooxml")
    out = io.BytesIO()
    with open(path, "rb") as f:
        ooxml.OOXMLFile(f).encrypt(password, out)
    path.write_bytes(out.getvalue())
    return path


def _locked_office_files(folder: Path, password: str) -> None:
    folder.mkdir()
    _encrypt(make_xlsx(folder / "cups.xlsx"), password)
    _encrypt(make_docx(folder / "manual.docx"), password)
    _encrypt(make_pptx(folder / "deck.pptx"), password)


def test_encrypted_ooxml_opened_with_the_configured_password(tmp_path: Path) -> None:
    _locked_office_files(tmp_path / "locked", "loom-secret")
    folder = tmp_path / "locked"
    for name in ("cups.xlsx", "manual.docx", "deck.pptx"):
        blob = Blob(name, folder / name, name)
        assert detect_format(blob) == "encrypted_ooxml"
    src = FilesSource(paths=[str(folder)], passwords=["not-this-one", "loom-secret"])
    rows, rejected = read_all(src)
    assert rejected == []
    ids = {r["id"] for r in rows}
    assert f"excel:{(folder / 'cups.xlsx').as_posix()}#sheet=Cups" in ids
    assert f"docx:{(folder / 'manual.docx').as_posix()}" in ids
    assert f"pptx:{(folder / 'deck.pptx').as_posix()}#page=2" in ids
    docx = next(r for r in rows if r["source"] == "docx")
    assert docx["meta"]["title"] == "Loom manual" and "| shuttle | 2 |" in docx["text"]
    # a format source reads its own encrypted files the same way
    sheets, rejected = read_all(ExcelSource(paths=[str(folder)], password="loom-secret"))
    assert rejected == [] and "| Leafs | TOR | 13 |" in sheets[0]["text"]


def test_encrypted_ooxml_wrong_password_and_no_password(tmp_path: Path) -> None:
    _locked_office_files(tmp_path / "locked", "loom-secret")
    folder = tmp_path / "locked"
    names = {"cups.xlsx", "manual.docx", "deck.pptx"}
    rows, rejected = read_all(FilesSource(paths=[str(folder)], passwords=["wrong", "also-wrong"]))
    assert rows == []
    assert {Path(r["location"]).name: r["reason"] for r in rejected} == dict.fromkeys(names, "wrong_password")
    assert "none of the 2 configured passwords" in rejected[0]["detail"]
    rows, rejected = read_all(FilesSource(paths=[str(folder)]))
    assert rows == []
    assert {Path(r["location"]).name: r["reason"] for r in rejected} == dict.fromkeys(names, "encrypted")


def test_shared_password_protected_xlsx_stays_encrypted(shared_data: Path) -> None:
    path = shared_data / "docs/office/password_protected.xlsx"
    _, rejected = read_all(FilesSource(paths=[str(path)]))
    assert [r["reason"] for r in rejected] == ["encrypted"]
    pytest.importorskip("msoffcrypto")
    _, rejected = read_all(FilesSource(paths=[str(path)], password="not-its-password"))
    assert [r["reason"] for r in rejected] == ["wrong_password"]
