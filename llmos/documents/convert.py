"""Document bytes to text, one converter per format; run only inside the sandboxed child.

Each converter takes the file's bytes and returns its units (pages, sheets, slides, or one
unit for a flowing document) as plain text, rows of a table as cells joined by " | ". The
libraries were chosen by measuring them on real files (see llmos/documents/__init__.py):
PDFium (pypdfium2) for PDFs, python-docx, openpyxl and python-pptx for Office files, the
standard library for HTML and OpenDocument, RapidOCR for text in images and scanned pages.
Every import is here, in the child, so llmos itself never loads them.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from xml.etree import ElementTree

CELL_SEP = " | "
PDF_RENDER_SCALE = 2.0
"""A scanned page is rendered at 144 dpi for OCR: small print stays legible, a page stays
under about 1700x2200 pixels."""


class ConvertError(Exception):
    """A document this converter cannot read: `code` is an llmos error code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class OcrLine:
    """One line of text found in an image: its words, the recogniser's confidence (0-1) and
    its box as [left, top, right, bottom] pixels."""

    text: str
    confidence: float
    box: list[int]


@dataclass
class Unit:
    """A page, sheet or slide (label "page 3"), or the whole of a flowing document (label "")."""

    label: str
    text: str
    ocr: bool = False
    lines: list[OcrLine] = field(default_factory=list)


@dataclass
class Limits:
    """How much one conversion may produce: characters of text, pages OCR'd."""

    max_chars: int
    ocr_pages: int


class _Budget:
    """Characters still allowed; a unit past the budget is cut and the rest skipped."""

    def __init__(self, limits: Limits) -> None:
        self.left = limits.max_chars
        self.ocr_left = limits.ocr_pages
        self.cut = False

    def take(self, text: str) -> str:
        if len(text) >= self.left:
            self.cut = True
            text = text[: max(self.left, 0)]
        self.left -= len(text)
        return text


def _cell(value: Any) -> str:
    """A cell as a person reads it: whole floats without ".0", dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())


def _row(cells: list[str]) -> str:
    """A table row, trailing empty cells dropped; "" when the row is empty."""
    while cells and not cells[-1]:
        cells.pop()
    return CELL_SEP.join(cells)


def ocr_image(data: bytes) -> list[OcrLine]:
    """The lines of text in an image (any format Pillow reads), top to bottom."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConvertError("E_INVAL", f"not an image Pillow can read ({exc})") from None
    return _ocr_array(np.asarray(rgb)[:, :, ::-1].copy())


def _ocr_array(bgr: Any) -> list[OcrLine]:
    """OCR of an image already decoded as a BGR array (what OpenCV and RapidOCR use)."""
    found, _ = _engine()(bgr)
    lines = []
    for quad, text, score in found or []:
        xs = [round(float(p[0])) for p in quad]
        ys = [round(float(p[1])) for p in quad]
        lines.append(
            OcrLine(" ".join(str(text).split()), float(score), [min(xs), min(ys), max(xs), max(ys)])
        )
    lines.sort(key=lambda line: (line.box[1], line.box[0]))
    return [line for line in lines if line.text]


_ENGINE: list[Any] = []


def _engine() -> Any:
    """RapidOCR's engine (its models ship in its wheel: nothing is downloaded), made once."""
    if not _ENGINE:
        from rapidocr_onnxruntime import RapidOCR

        _ENGINE.append(RapidOCR())
    return _ENGINE[0]


def image(data: bytes, limits: Limits) -> list[Unit]:
    """An image's text by OCR, one unit; its lines keep confidence and box."""
    lines = ocr_image(data)
    budget = _Budget(limits)
    text = budget.take("\n".join(line.text for line in lines))
    return [Unit("", text, ocr=True, lines=lines)]


def pdf(data: bytes, limits: Limits) -> list[Unit]:
    """A PDF's pages through PDFium; a page with no text layer but something drawn is OCR'd
    (up to `limits.ocr_pages` such pages)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        reason = str(exc)
        if "password" in reason.lower():
            raise ConvertError("E_PERM", "the PDF is encrypted (it needs a password)") from None
        raise ConvertError("E_INVAL", f"not a PDF PDFium can read ({reason})") from None
    budget = _Budget(limits)
    units: list[Unit] = []
    try:
        for number in range(len(doc)):
            if budget.cut:
                break
            page = doc[number]
            try:
                text = page.get_textpage().get_text_bounded()
                text = "\n".join(line.rstrip() for line in text.replace("\r", "").split("\n"))
                ocr = False
                if not text.strip() and budget.ocr_left > 0 and _draws_something(page):
                    budget.ocr_left -= 1
                    bitmap = page.render(scale=PDF_RENDER_SCALE, rev_byteorder=False)
                    array = bitmap.to_numpy()[:, :, :3].copy()
                    text = "\n".join(line.text for line in _ocr_array(array))
                    ocr = True
            finally:
                page.close()
            units.append(Unit(f"page {number + 1}", budget.take(text.strip("\n")), ocr=ocr))
    finally:
        doc.close()
    return units


def _draws_something(page: Any) -> bool:
    """Whether a page holds any image or drawing (a blank page is not worth OCR)."""
    return any(True for _ in page.get_objects(max_depth=1))


def check_zip(data: bytes, max_unzipped: int, max_entries: int) -> zipfile.ZipFile:
    """The zip container of an Office or OpenDocument file, refused before anything is
    decompressed when its entries declare more than `max_unzipped` bytes in all (a
    decompression bomb) or there are more than `max_entries` of them. Python's zipfile never
    inflates an entry past the size it declares, so the declared sizes bound the work."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ConvertError("E_INVAL", f"not a readable zip container ({exc})") from None
    entries = archive.infolist()
    if len(entries) > max_entries:
        raise ConvertError("E_TOOBIG", f"the file holds {len(entries)} parts (most {max_entries})")
    declared = sum(entry.file_size for entry in entries)
    if declared > max_unzipped:
        raise ConvertError(
            "E_TOOBIG",
            f"the file unpacks to {declared} bytes (most {max_unzipped}): refused unread",
        )
    return archive


def docx(data: bytes, limits: Limits) -> list[Unit]:
    """A Word document's paragraphs and tables in the order they appear; headings keep a "#"."""
    from docx import Document
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        doc = Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors...
        raise ConvertError("E_INVAL", f"not a Word document python-docx can read ({exc})") from None
    lines: list[str] = []
    for block in doc.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            style = (block.style.name or "") if block.style is not None else ""
            if text and style.startswith("Heading"):
                level = style.removeprefix("Heading").strip()
                text = "#" * (int(level) if level.isdigit() else 1) + " " + text
            lines.append(text)
        elif isinstance(block, Table):
            lines.extend(_docx_table(block))
            lines.append("")
    return [Unit("", _Budget(limits).take(_tidy(lines)))]


def _docx_table(table: Any) -> Iterator[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        last = None
        for cell in row.cells:
            if cell._tc is last:  # a merged cell repeats across the columns it spans
                continue
            last = cell._tc
            cells.append(" ".join(cell.text.split()))
        rows.append(cells)
    yield from _table(rows)


def _table(rows: list[list[str]]) -> Iterator[str]:
    """A document's table as lines: a first row of two or more filled cells is its header, and
    the rows under it read as a sheet's do ("Item: Box kite | Price: 60"), so each row stands
    on its own. Asked what a two-row price table held, the 1.5B model answered "4 items"."""
    filled = [cells for cells in rows if any(cells)]
    header = filled[0] if len(filled) > 1 and sum(1 for c in filled[0] if c) >= 2 else None
    for index, cells in enumerate(filled):
        if header is not None and index > 0:
            cells = [_labelled(header, i, cell) for i, cell in enumerate(cells)]
        if line := _row(list(cells)):
            yield line


def _tidy(lines: list[str]) -> str:
    """Lines joined, runs of blank lines made one."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def xlsx(data: bytes, limits: Limits) -> list[Unit]:
    """A workbook's sheets, each as its rows (values as last calculated, not formulas)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises InvalidFileException, KeyError, lxml errors...
        raise ConvertError("E_INVAL", f"not a workbook openpyxl can read ({exc})") from None
    budget = _Budget(limits)
    units = []
    try:
        for sheet in book.worksheets:
            if budget.cut:
                break
            rows: list[str] = []
            size = 0
            header: list[str] | None = None
            table: list[tuple[Any, ...]] = []
            for values in sheet.iter_rows(values_only=True):
                cells = [_cell(value) for value in values]
                if header is None and rows == [] and _is_header(values):
                    header = cells
                    line = _row(list(cells))
                elif header is not None:
                    line = _row([_labelled(header, i, cell) for i, cell in enumerate(cells)])
                    if line and len(table) < SUMMARY_ROWS:
                        table.append(values)
                else:
                    line = _row(cells)
                if line:
                    rows.append(line)
                    size += len(line) + 1
                    if size > budget.left:
                        break
            summary = _summary(header, table) if header is not None else []
            text = "\n".join([*summary, *rows])
            units.append(Unit(f"sheet {sheet.title}", budget.take(text)))
    finally:
        book.close()
    return units


SUMMARY_MIN_ROWS = 3
"""A sheet of fewer rows is read at a glance: summed up too, the 1.5B model quoted the first
sheet's "highest" for a question about the second."""
SUMMARY_ROWS = 100_000
"""Rows of a sheet whose numbers are summed up (more than any sheet a person asks about)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _summary(header: list[str], table: list[tuple[Any, ...]]) -> list[str]:
    """A line per numeric column of a sheet with a header: its total, and its highest and
    lowest value with the row's label (the first text column). Put before the rows, it answers
    "which month had the highest sales" and "what is the total" for the whole sheet, also
    when the rows are too many to show, without the model comparing numbers itself."""
    if len(table) < SUMMARY_MIN_ROWS:
        return []
    label_at = next(
        (
            i
            for i in range(len(header))
            if any(isinstance(row[i], str) for row in table if i < len(row))
        ),
        None,
    )
    lines = []
    for column, name in enumerate(header):
        if column == label_at or not name:
            continue
        found = [
            (number, row)
            for row in table
            if column < len(row) and (number := _number(row[column])) is not None
        ]
        if len(found) < 2 or len(found) < len(table) // 2:
            continue
        total = round(sum(number for number, _ in found), 9)
        (high, high_row), (low, low_row) = max(found, key=_first), min(found, key=_first)

        def named(value: float, row: tuple[Any, ...]) -> str:
            label = row[label_at] if label_at is not None and label_at < len(row) else None
            return _cell(value) + (f" ({_cell(label)})" if label not in (None, "") else "")

        lines.append(
            f"{name} over {len(found)} rows: total {_cell(total)}, highest "
            f"{named(high, high_row)}, lowest {named(low, low_row)}"
        )
    return lines


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


def _is_header(values: tuple[Any, ...]) -> bool:
    """Whether a sheet's first row names its columns: two or more cells, all words."""
    filled = [value for value in values if value is not None and value != ""]
    return len(filled) >= 2 and all(isinstance(value, str) for value in filled)


def _labelled(header: list[str], column: int, cell: str) -> str:
    """A cell under its column's name ("sales: 4100"), so each row reads on its own."""
    name = header[column] if column < len(header) else ""
    return f"{name}: {cell}" if name and cell else cell


def pptx(data: bytes, limits: Limits) -> list[Unit]:
    """A presentation's slides: the text of every shape and table, then the speaker's notes."""
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(data))
    except Exception as exc:  # python-pptx raises KeyError, ValueError, lxml errors...
        raise ConvertError("E_INVAL", f"not a presentation python-pptx can read ({exc})") from None
    budget = _Budget(limits)
    units = []
    for number, slide in enumerate(deck.slides, 1):
        lines: list[str] = []
        for shape in slide.shapes:
            lines.extend(_shape_lines(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(f"Notes: {notes}")
        units.append(Unit(f"slide {number}", budget.take(_tidy(lines))))
        if budget.cut:
            break
    return units


def _shape_lines(shape: Any) -> Iterator[str]:
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        for paragraph in shape.text_frame.paragraphs:
            text = "".join(run.text for run in paragraph.runs).strip()
            if text:
                yield text
    if getattr(shape, "has_table", False) and shape.has_table:
        yield from _table(
            [[" ".join(cell.text.split()) for cell in row.cells] for row in shape.table.rows]
        )
    for inner in getattr(shape, "shapes", ()):  # a group
        yield from _shape_lines(inner)


BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt"),
        *("figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"),
        *("header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table"),
        *("tbody", "td", "th", "thead", "title", "tr", "ul"),
    }
)
SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})


class _HtmlText(HTMLParser):
    """The words a browser shows: script, style and head skipped (the title kept), a line
    break at each block, table cells joined with " | "."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in SKIP_TAGS:
            self.skipping += 1
        if tag in ("td", "th") and self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append(CELL_SEP)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            self.parts.append("\n")
        elif tag in SKIP_TAGS:
            self.skipping = max(self.skipping - 1, 0)
        if tag in BLOCK_TAGS and tag not in ("td", "th"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title or not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html(data: bytes, limits: Limits) -> list[Unit]:
    """A web page's text (charset from a BOM or a meta tag, else UTF-8)."""
    text = _html_decode(data)
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    out = [line.removeprefix(CELL_SEP.strip()).strip() for line in lines]
    return [Unit("", _Budget(limits).take(_tidy(out)))]


def _html_decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    meta = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", data[:4096], re.IGNORECASE)
    charset = meta.group(1).decode("ascii") if meta else "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
ODF_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"


def odf(data: bytes, limits: Limits, archive: zipfile.ZipFile) -> list[Unit]:
    """An OpenDocument file's (odt, ods, odp) paragraphs, headings and table rows in order,
    parsed with the standard library (expat refuses entity-expansion bombs by itself)."""
    try:
        root = ElementTree.fromstring(archive.read("content.xml"))
    except (KeyError, ElementTree.ParseError, zipfile.BadZipFile) as exc:
        raise ConvertError("E_INVAL", f"not an OpenDocument file ({exc})") from None
    lines: list[str] = []
    _odf_walk(root, lines)
    return [Unit("", _Budget(limits).take(_tidy(lines)))]


def _odf_text(element: ElementTree.Element) -> str:
    parts = []
    if element.text:
        parts.append(element.text)
    for child in element:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "s":
            parts.append(" " * int(child.get(f"{{{ODF_TEXT}}}c", "1")))
        elif tag == "tab":
            parts.append("\t")
        elif tag == "line-break":
            parts.append("\n")
        else:
            parts.append(_odf_text(child))
        if child.tail:
            parts.append(child.tail)
    return "".join(parts)


def _odf_walk(element: ElementTree.Element, lines: list[str]) -> None:
    for child in element:
        if child.tag == f"{{{ODF_TABLE}}}table-row":
            cells = [
                " ".join(_odf_text(cell).split())
                for cell in child
                if cell.tag == f"{{{ODF_TABLE}}}table-cell"
            ]
            if line := _row(cells):
                lines.append(line)
        elif child.tag == f"{{{ODF_TEXT}}}h":
            lines.append("# " + _odf_text(child).strip())
        elif child.tag == f"{{{ODF_TEXT}}}p":
            lines.append(_odf_text(child).strip())
        else:
            _odf_walk(child, lines)


Converter = Callable[[bytes, Limits], list[Unit]]
CONVERTERS: dict[str, Converter] = {
    "pdf": pdf,
    "docx": docx,
    "xlsx": xlsx,
    "pptx": pptx,
    "html": html,
    "image": image,
}
ZIPPED = frozenset({"docx", "xlsx", "pptx", "odt", "ods", "odp"})


def convert(
    kind: str, data: bytes, limits: Limits, max_unzipped: int, max_entries: int
) -> list[Unit]:
    """The units of a document of `kind` (see llmos.documents.kind_of)."""
    if kind in ZIPPED:
        archive = check_zip(data, max_unzipped, max_entries)
        if kind in ("odt", "ods", "odp"):
            return odf(data, limits, archive)
    converter = CONVERTERS.get(kind)
    if converter is None:
        raise ConvertError("E_INVAL", f"no converter for {kind} files")
    return converter(data, limits)
