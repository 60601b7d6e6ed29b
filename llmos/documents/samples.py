"""Real documents made from a short description, for evaluation cases and tests.

`make(path, spec)` writes a PDF (text pages, or `scanned` pages that are only an image of their
text), a DOCX (paragraphs and a table), an XLSX (sheets of rows), a PPTX (slides), an ODT
(paragraphs) or an image holding lines of text, each through the format's own library (the PDF
by a small writer here: one font, one image per scanned page, nothing else), so what the
converters read is what those programs would write.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPEC_KEYS = {
    ".pdf": {"pages", "scanned"},
    ".docx": {"paragraphs", "table"},
    ".xlsx": {"sheets"},
    ".pptx": {"slides"},
    ".odt": {"paragraphs"},
    ".png": {"lines", "size"},
    ".jpg": {"lines", "size"},
    ".jpeg": {"lines", "size"},
}
"""The keys a description may have, by the file's extension."""


def problem(rel: str, spec: Any) -> str:
    """Why `spec` cannot describe a document at `rel` ("" when it can)."""
    suffix = Path(rel).suffix.lower()
    keys = SPEC_KEYS.get(suffix)
    if keys is None:
        return f"{rel}: documents can be {', '.join(sorted(SPEC_KEYS))} files"
    if not isinstance(spec, dict) or not spec:
        return f"{rel}: a document is described by an object with {sorted(keys)}"
    unknown = set(spec) - keys
    if unknown:
        return f"{rel}: unknown keys {sorted(unknown)} (known: {sorted(keys)})"
    return ""


def make(path: Path, spec: dict[str, Any]) -> None:
    """Write the document `spec` describes at `path` (its format from the extension)."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pdf":
        pages = [str(page) for page in spec.get("pages", [])]
        path.write_bytes(pdf(pages, scanned=bool(spec.get("scanned"))))
    elif suffix == ".docx":
        path.write_bytes(docx(spec.get("paragraphs", []), spec.get("table")))
    elif suffix == ".xlsx":
        path.write_bytes(xlsx(spec["sheets"]))
    elif suffix == ".pptx":
        path.write_bytes(pptx([str(slide) for slide in spec["slides"]]))
    elif suffix == ".odt":
        path.write_bytes(odt([str(p) for p in spec["paragraphs"]]))
    else:
        width, height = spec.get("size", (1280, 720))
        image = text_image([str(line) for line in spec["lines"]], (int(width), int(height)))
        image.save(path)


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def pdf(pages: Sequence[str], *, scanned: bool = False) -> bytes:
    """A PDF of US Letter pages: each page's lines in Helvetica 12, or with `scanned` a JPEG of
    them filling the page and no text layer (as a scanner makes)."""
    objects: list[bytes] = [b"", b""]  # 1: catalog, 2: page tree, filled in at the end
    font = _add(
        objects,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    )
    kids = []
    for text in pages:
        if scanned:
            image = text_image(text.split("\n"), (1224, 1584), font_px=32, margin=144)
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=90)
            data = jpeg.getvalue()
            picture = _add(
                objects,
                b"<< /Type /XObject /Subtype /Image /Width 1224 /Height 1584 /ColorSpace "
                b"/DeviceRGB /BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n"
                % len(data)
                + data
                + b"\nendstream",
            )
            stream = b"q 612 0 0 792 0 0 cm /Im1 Do Q"
            resources = b"<< /XObject << /Im1 %d 0 R >> >>" % picture
        else:
            lines = [_pdf_string(line) + b" Tj T*" for line in text.split("\n")]
            stream = b"BT /F1 12 Tf 14 TL 72 720 Td " + b" ".join(lines) + b" ET"
            resources = b"<< /Font << /F1 %d 0 R >> >>" % font
        content = _add(
            objects, b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        )
        kids.append(
            _add(
                objects,
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                + resources
                + b" /Contents %d 0 R >>" % content,
            )
        )
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    objects[1] = b"<< /Type /Pages /Kids [" + refs + b"] /Count %d >>" % len(kids)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _add(objects: list[bytes], body: bytes) -> int:
    objects.append(body)
    return len(objects)


def text_image(
    lines: Sequence[str], size: tuple[int, int], *, font_px: int = 28, margin: int = 40
) -> Any:
    """A white image with `lines` of black text (Pillow's own TrueType font)."""
    from PIL import Image, ImageDraw, ImageFont

    px = font_px
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=px)
    top = margin
    for line in lines:
        draw.text((margin, top), line, fill="black", font=font)
        top += int(px * 1.8)
    return image


def docx(paragraphs: Sequence[str], table: Sequence[Sequence[Any]] | None = None) -> bytes:
    """A Word document: the paragraphs (one starting "# " is a heading), then the table."""
    from docx import Document

    doc = Document()
    for text in paragraphs:
        if text.startswith("# "):
            doc.add_heading(text[2:], level=1)
        else:
            doc.add_paragraph(text)
    if table:
        grid = doc.add_table(rows=len(table), cols=max(len(row) for row in table))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = str(value)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, Sequence[Sequence[Any]]]) -> bytes:
    """A workbook with a sheet per name, holding its rows (numbers stay numbers)."""
    import openpyxl

    book = openpyxl.Workbook()
    first = True
    for name, rows in sheets.items():
        if first:
            sheet = book.active
            assert sheet is not None
            sheet.title = name
            first = False
        else:
            sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pptx(slides: Sequence[str]) -> bytes:
    """A presentation: each slide's first line its title, the rest its body."""
    from pptx import Presentation

    deck = Presentation()
    layout = deck.slide_layouts[1]
    for text in slides:
        title, _, body = text.partition("\n")
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


ODT_CONTENT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
    "<office:body><office:text>{}</office:text></office:body></office:document-content>"
)
ODT_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
    'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
    'manifest:media-type="application/vnd.oasis.opendocument.text"/><manifest:file-entry '
    'manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>'
)


def odt(paragraphs: Sequence[str]) -> bytes:
    """An OpenDocument text: the mimetype first and stored, as the standard requires."""
    from xml.sax.saxutils import escape

    body = "".join(f"<text:p>{escape(text)}</text:p>" for text in paragraphs)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo("mimetype"),
            "application/vnd.oasis.opendocument.text",
            compress_type=zipfile.ZIP_STORED,
        )
        archive.writestr("content.xml", ODT_CONTENT.format(body), zipfile.ZIP_DEFLATED)
        archive.writestr("META-INF/manifest.xml", ODT_MANIFEST, zipfile.ZIP_DEFLATED)
    return out.getvalue()
