"""Fixture files written by libraries (fpdf2, python-docx, openpyxl, python-pptx, email)."""

from __future__ import annotations

import os
import zipfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from genloom.core.records import table_to_records
from genloom.core.steps import Source, StepContext


def read_all(src: Source) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every record and every quarantined row of a source, read partition by partition."""
    ctx = StepContext()
    rows: list[dict[str, Any]] = []
    for p in src.partitions():
        for table in src.run_partition(p, ctx):
            rows.extend(table_to_records(table))
    return rows, ctx.rejected


def shared_data_dir() -> Path | None:
    """``../shared/data`` next to the repository (or ``$GENLOOM_SHARED_DATA``), if present."""
    env = os.environ.get("GENLOOM_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return root if root.is_dir() else None


def make_pdf(path: Path, password: str | None = None, pages: int = 2) -> Path:
    """A PDF with an outline (Intro, Details > Sub), a ruled table on the last page."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.start_section("Intro")
    pdf.multi_cell(0, 8, "The intro page talks about looms and weaving. " * 10)
    for k in range(2, pages + 1):
        pdf.add_page()
        if k == 2:
            pdf.start_section("Details")
            pdf.start_section("Sub", level=1)
        pdf.multi_cell(0, 8, f"Page {k} holds the details of the loom.")
    with pdf.table() as table:
        for r in (("Name", "Qty"), ("apple", "3"), ("pear", "5")):
            row = table.row()
            for c in r:
                row.cell(c)
    if password:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    pdf.output(str(path))
    return path


def make_scanned_pdf(path: Path) -> Path:
    """A PDF whose only page is an image of text (no text layer)."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (1200, 300), 255)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=48)
    except TypeError:
        font = ImageFont.load_default()
    draw.text((40, 100), "HELLO SCANNED WORLD", fill=0, font=font)
    png = path.with_suffix(".png")
    img.save(png)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(png), x=10, y=10, w=190)
    pdf.output(str(path))
    png.unlink()
    return path


def make_docx(path: Path) -> Path:
    """A DOCX with a title, headings, a list, a table and core properties."""
    import docx

    d = docx.Document()
    d.core_properties.title = "Loom manual"
    d.core_properties.author = "Ada"
    d.add_heading("Loom manual", level=0)
    d.add_heading("Setup", level=1)
    d.add_paragraph("Unpack the loom and check every part.")
    d.add_paragraph("first item", style="List Bullet")
    d.add_paragraph("nested item", style="List Bullet 2")
    d.add_heading("Warping", level=2)
    d.add_paragraph("Wind the warp threads evenly.")
    t = d.add_table(rows=3, cols=2)
    for i, (a, b) in enumerate((("Part", "Count"), ("shuttle", "2"), ("heddle", "120"))):
        t.cell(i, 0).text, t.cell(i, 1).text = a, b
    d.add_heading("Care", level=1)
    d.add_paragraph("Oil the loom once a month.")
    d.save(str(path))
    return path


def make_xlsx(path: Path) -> Path:
    """A workbook: sheet 1 has a title row above the header and a vertical merge; sheet 2 is empty."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Cups"
    ws.append(["Stanley Cups"])
    ws.append(["Team", "City", "Cups"])
    ws.append(["Blues", "STL", 1])
    ws.append(["Flyers", "PHI", 2])
    ws.append(["Leafs", "TOR", 13])
    ws.append([None, "TOR", 1.5])
    ws.merge_cells("A5:A6")
    wb.create_sheet("Empty")
    wb.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    """Two slides: a title slide and a bullet slide with a table and speaker notes."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    s1 = prs.slides.add_slide(prs.slide_layouts[0])
    s1.shapes.title.text = "Weaving 101"
    s1.placeholders[1].text = "An introduction"
    s2 = prs.slides.add_slide(prs.slide_layouts[5])
    s2.shapes.title.text = "Parts"
    box = s2.shapes.add_textbox(Inches(1), Inches(1.5), Inches(6), Inches(1))
    box.text_frame.text = "A loom has many parts."
    table = s2.shapes.add_table(2, 2, Inches(1), Inches(3), Inches(6), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "Part", "Use"
    table.cell(1, 0).text, table.cell(1, 1).text = "shuttle", "carries the weft"
    s2.notes_slide.notes_text_frame.text = "Mention the heddles."
    prs.save(str(path))
    return path


def make_odt(path: Path) -> Path:
    """A minimal ODT (zip with mimetype first, content.xml, meta.xml)."""
    content = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2">
<office:body><office:text>
<text:h text:outline-level="1">Threads</text:h>
<text:p>Cotton<text:s text:c="2"/>and wool.</text:p>
<text:list><text:list-item><text:p>warp</text:p></text:list-item><text:list-item><text:p>weft</text:p></text:list-item></text:list>
<table:table><table:table-row><table:table-cell><text:p>Fibre</text:p></table:table-cell><table:table-cell><text:p>Weight</text:p></table:table-cell></table:table-row>
<table:table-row><table:table-cell><text:p>wool</text:p></table:table-cell><table:table-cell><text:p>heavy</text:p></table:table-cell></table:table-row></table:table>
</office:text></office:body></office:document-content>"""
    meta = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta><dc:title>Threads</dc:title></office:meta></office:document-meta>"""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", content)
        z.writestr("meta.xml", meta)
    return path


def make_eml(path: Path, attachment: tuple[str, bytes] | None = None) -> Path:
    """A multipart message with plain and HTML bodies and one attachment."""
    msg = EmailMessage()
    msg["Subject"] = "Loom delivery"
    msg["From"] = "Ada <ada@example.com>"
    msg["To"] = "bob@example.com"
    msg["Date"] = "Tue, 24 Nov 2026 10:00:00 +0000"
    msg.set_content("The loom arrives on Friday.\n\nRegards, Ada")
    msg.add_alternative(
        "<html><body><p>The <b>loom</b> arrives on Friday (HTML).</p></body></html>", subtype="html"
    )
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    path.write_bytes(bytes(msg))
    return path
