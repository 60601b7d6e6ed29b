"""Documents and the text in images, on real files made here: fs.read, image.text, fs.search by
words and by meaning, the cache, and bad input (encrypted, corrupt, bombs, too big, too slow).
Every conversion runs the real converter child in the real sandbox."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

import llmos.documents as documents_mod
from llmos.config import Settings
from llmos.documents import CACHE_DIR, Documents, kind_of, samples, where
from llmos.errors import ErrorCode
from llmos.security.sandbox import Sandbox, landlock_abi
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System


def _call(system: System, proc: Process, call: str, **args: Any) -> SyscallResult:
    return system.dispatch(proc, {"call": call, **args})


def _ok(result: SyscallResult) -> dict[str, Any]:
    assert result.ok, result.message
    value: dict[str, Any] = result.value
    return value


def _err(result: SyscallResult, code: ErrorCode) -> str:
    assert not result.ok and result.code == code, (result.code, result.message)
    return result.message or ""


@pytest.fixture
def office(workspace: Path) -> Path:
    """One real file of each kind, each holding a word found nowhere else."""
    samples.make(
        workspace / "invoice.pdf",
        {"pages": ["Invoice 4471 for kites\nTotal due: 1,234.50 EUR", "Paid by walrus transfer"]},
    )
    samples.make(
        workspace / "scan.pdf",
        {"pages": ["Scanned contract", "Notice period: ninety days"], "scanned": True},
    )
    samples.make(
        workspace / "contract.docx",
        {
            "paragraphs": ["# Terms", "Either party may end this with thirty days of notice."],
            "table": [["Item", "Price"], ["Pelican kite", "25"]],
        },
    )
    samples.make(
        workspace / "sales.xlsx",
        {
            "sheets": {
                "Jan": [["region", "sales"], ["north", 1200], ["south", 950.5]],
                "Feb": [["region", "sales"], ["north", 1810], ["marmot", 3]],
            }
        },
    )
    samples.make(workspace / "deck.pptx", {"slides": ["Roadmap\nShip the heron feature", "Costs"]})
    samples.make(workspace / "letter.odt", {"paragraphs": ["Dear Sam,", "The otter arrives."]})
    (workspace / "page.html").write_text(
        "<html><head><title>Shop</title><script>var hidden = 'gecko';</script></head>"
        "<body><h1>Prices</h1><table><tr><td>Lynx</td><td>12</td></tr></table></body></html>"
    )
    samples.make(workspace / "screenshot.png", {"lines": ["Error: disk full on volume zebra"]})
    return workspace


def test_documents_are_read_as_text_with_pages_marked(
    system: System, proc: Process, office: Path
) -> None:
    pdf = _ok(_call(system, proc, "fs.read", path="invoice.pdf"))
    assert (pdf["format"], pdf["pages"]) == ("pdf", 2) and "ocr" not in pdf  # left out unless OCR
    assert pdf["text"].splitlines() == [
        "[page 1]",
        "Invoice 4471 for kites",
        "Total due: 1,234.50 EUR",
        "",
        "[page 2]",
        "Paid by walrus transfer",
    ]
    assert pdf["size"] == (office / "invoice.pdf").stat().st_size

    docx = _ok(_call(system, proc, "fs.read", path="contract.docx"))
    assert docx["format"] == "docx" and "pages" not in docx
    assert "lines" not in docx, "a conversion's lines are no count a person means"
    assert docx["text"].splitlines() == [
        "# Terms",
        "Either party may end this with thirty days of notice.",
        "Item | Price",
        "Item: Pelican kite | Price: 25",
    ]

    sheets = _ok(_call(system, proc, "fs.read", path="sales.xlsx"))["text"]
    # Each row carries its column names (two rows are not summed up: see the next test).
    assert sheets.split("\n\n") == [
        "[sheet Jan]\nregion | sales\nregion: north | sales: 1200\nregion: south | sales: 950.5",
        "[sheet Feb]\nregion | sales\nregion: north | sales: 1810\nregion: marmot | sales: 3",
    ]
    slides = _ok(_call(system, proc, "fs.read", path="deck.pptx"))
    assert slides["pages"] == 2
    assert slides["text"].startswith("[slide 1]\nRoadmap\nShip the heron feature")
    assert _ok(_call(system, proc, "fs.read", path="letter.odt"))["text"] == (
        "Dear Sam,\nThe otter arrives."
    )
    page = _ok(_call(system, proc, "fs.read", path="page.html"))["text"]
    assert [line for line in page.splitlines() if line] == ["Shop", "# Prices", "Lynx | 12"]
    assert "gecko" not in page  # a script is not text a person sees


def test_a_scanned_page_and_a_screenshot_are_read_by_ocr(
    system: System, proc: Process, office: Path
) -> None:
    scan = _ok(_call(system, proc, "fs.read", path="scan.pdf"))
    assert scan["ocr"] is True and scan["pages"] == 2
    assert "[page 2]\nNotice period: ninety days" in scan["text"]
    shot = _ok(_call(system, proc, "fs.read", path="screenshot.png"))
    assert shot["format"] == "image" and shot["ocr"] is True
    # RapidOCR's recogniser reads every letter but may drop a space between two words.
    assert "".join(shot["text"].split()) == "Error:diskfullonvolumezebra"


def test_image_text_gives_each_line_with_confidence_and_box(
    system: System, proc: Process, workspace: Path
) -> None:
    samples.make(
        workspace / "sign.png",
        {"lines": ["Opening hours", "Monday to Friday 9-17"], "size": [900, 300]},
    )
    value = _ok(_call(system, proc, "image.text", path="sign.png"))
    assert [line["text"] for line in value["lines"]] == ["Opening hours", "Monday to Friday 9-17"]
    assert value["count"] == 2 and value["text"] == "Opening hours\nMonday to Friday 9-17"
    first, second = value["lines"]
    assert 0.8 < first["confidence"] <= 1.0
    left, top, right, bottom = first["box"]
    # The first line is drawn at (40, 40) in 28 px type, the second 50 px lower.
    assert 30 <= left <= 50 and 30 <= top <= 55 and right > left + 150 and bottom < second["box"][1]
    blank = workspace / "blank.png"
    samples.text_image([], (200, 100)).save(blank)
    empty = _ok(_call(system, proc, "image.text", path="blank.png"))
    assert empty["count"] == 0 and empty["text"] == ""
    (workspace / "notes.txt").write_text("not an image")
    _err(_call(system, proc, "image.text", path="notes.txt"), ErrorCode.E_INVAL)


def test_stat_previews_a_documents_text_but_runs_no_ocr_for_it(
    system: System, proc: Process, office: Path
) -> None:
    pdf = _ok(_call(system, proc, "fs.stat", path="invoice.pdf"))
    assert (pdf["format"], pdf["pages"], pdf["lines"]) == ("pdf", 2, None)
    assert pdf["preview"].startswith("[page 1]\nInvoice 4471 for kites\nTotal due")
    assert pdf["size"] == (office / "invoice.pdf").stat().st_size
    image = _ok(_call(system, proc, "fs.stat", path="screenshot.png"))
    assert image["preview"] is None and "format" not in image  # OCR is not run for a stat
    _ok(_call(system, proc, "image.text", path="screenshot.png"))
    image = _ok(_call(system, proc, "fs.stat", path="screenshot.png"))
    assert image["format"] == "image" and "zebra" in image["preview"]


def test_search_by_words_finds_a_word_in_every_kind_and_says_where(
    system: System, proc: Process, office: Path
) -> None:
    # A search by words runs no OCR (the meaning index may: the passage it found comes as such);
    # an image's words are found by words once something has read them.
    hits = _ok(_call(system, proc, "fs.search", query="zebra"))["hits"]
    assert [h for h in hits if h.get("by") != "meaning"] == []
    _ok(_call(system, proc, "image.text", path="screenshot.png"))
    found = {}
    for word in ("walrus", "ninety", "pelican", "marmot", "heron", "otter", "lynx", "zebra"):
        hits = _ok(_call(system, proc, "fs.search", query=word))["hits"]
        assert hits, word
        found[word] = (hits[0]["path"], hits[0].get("where"))
    assert found == {
        "walrus": ("invoice.pdf", "page 2"),
        "ninety": ("scan.pdf", "page 2"),
        "pelican": ("contract.docx", None),
        "marmot": ("sales.xlsx", "sheet Feb"),
        "heron": ("deck.pptx", "slide 1"),
        "otter": ("letter.odt", None),
        "lynx": ("page.html", None),
        "zebra": ("screenshot.png", None),
    }
    regex = _ok(_call(system, proc, "fs.search", query=r"north \| sales: 18\d+", regex=True))
    assert [(h["path"], h["where"]) for h in regex["hits"]] == [("sales.xlsx", "sheet Feb")]


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_search_by_meaning_covers_documents(system: System, proc: Process, office: Path) -> None:
    index = system.files(proc.workspace)
    found = index.search("how much do I have to pay for the kites", k=3)
    assert found.hits and found.hits[0].path == "invoice.pdf"
    assert found.hits[0].text.startswith("[page 1]\nInvoice 4471")
    found = index.search("an alert that the storage ran out of space", k=3)
    assert "screenshot.png" in [hit.path for hit in found.hits]
    # A photo larger than a 4K screen is not read by OCR for the index (seconds each).
    samples.make(office / "photo.jpg", {"lines": ["Sunset over the harbour"], "size": [4000, 3000]})
    found = index.search("sunset over the harbour", k=5)
    assert "photo.jpg" not in [hit.path for hit in found.hits]


def test_text_is_converted_once_per_file_version(
    system: System, proc: Process, office: Path, llmos_home: Path
) -> None:
    data = (office / "scan.pdf").read_bytes()
    reader = system.documents
    started = time.perf_counter()
    first = reader.read(data, "pdf", "scan.pdf")
    converted = time.perf_counter() - started
    started = time.perf_counter()
    again = reader.read(data, "pdf", "scan.pdf")
    hit = time.perf_counter() - started
    assert not first.cached and again.cached and again.units == first.units
    assert hit < converted / 10
    assert len(list((llmos_home / CACHE_DIR).glob("*.json"))) == 1
    samples.make(office / "scan.pdf", {"pages": ["A new version"], "scanned": True})
    assert not reader.read((office / "scan.pdf").read_bytes(), "pdf", "scan.pdf").cached


def test_with_memory_encrypted_the_cache_holds_no_text(workspace: Path, llmos_home: Path) -> None:
    samples.make(workspace / "secret.docx", {"paragraphs": ["The vault code is 7731."]})
    with System(Settings(home=llmos_home, memory_encrypt=True), plugins=False) as system:
        proc = system.spawn("t", workspace, patterns=["fs.*"])
        text = _ok(_call(system, proc, "fs.read", path="secret.docx"))["text"]
        assert text == "The vault code is 7731."
        entries = list((llmos_home / CACHE_DIR).iterdir())
        assert len(entries) == 1 and b"7731" not in entries[0].read_bytes()
        assert system.documents.read(
            (workspace / "secret.docx").read_bytes(), "docx", "secret.docx"
        ).cached


def test_the_cache_keeps_within_its_size_dropping_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = Documents(tmp_path / "cache")
    pages = [samples.pdf([f"Version {n} of the plan"]) for n in range(3)]
    reader.read(pages[0], "pdf", "a.pdf")
    entry = next((tmp_path / "cache").iterdir())
    monkeypatch.setattr(documents_mod, "DOCUMENT_CACHE_BYTES", 2 * entry.stat().st_size + 10)
    time.sleep(0.01)
    reader.read(pages[1], "pdf", "a.pdf")
    time.sleep(0.01)
    reader.read(pages[2], "pdf", "a.pdf")
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert reader.cached(pages[0], "pdf") is None  # the oldest went first
    assert reader.cached(pages[2], "pdf") is not None


def _encrypted_pdf() -> bytes:
    data = samples.pdf(["secret"])
    encrypt = b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32
    encrypt += b"> /P -4 >> /ID [<" + b"33" * 16 + b"> <" + b"33" * 16 + b">]"
    return data.replace(b"/Root 1 0 R >>", b"/Root 1 0 R /Encrypt " + encrypt + b" >>")


def test_bad_documents_get_clear_errors_and_break_nothing(
    system: System, proc: Process, office: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (office / "locked.pdf").write_bytes(_encrypted_pdf())
    assert "password" in _err(_call(system, proc, "fs.read", path="locked.pdf"), ErrorCode.E_PERM)
    (office / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body at all")
    assert "broken.pdf" in _err(
        _call(system, proc, "fs.read", path="broken.pdf"), ErrorCode.E_INVAL
    )
    (office / "fake.docx").write_bytes(_zip({"word/document.xml": b"<not really"}))
    _err(_call(system, proc, "fs.read", path="fake.docx"), ErrorCode.E_INVAL)
    (office / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    _err(_call(system, proc, "image.text", path="bad.png"), ErrorCode.E_INVAL)
    # A search over all of them still finds what the good files hold.
    hits = _ok(_call(system, proc, "fs.search", query="walrus"))["hits"]
    assert [h["path"] for h in hits] == ["invoice.pdf"]


def _zip(parts: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_decompression_bomb_is_refused_before_it_is_inflated(
    system: System, proc: Process, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents_mod, "DOCUMENT_MAX_UNZIPPED", 4 * 1024 * 1024)
    bomb = _zip({"[Content_Types].xml": b"<x/>", "word/document.xml": b"\x00" * (8 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    (workspace / "bomb.docx").write_bytes(bomb)
    message = _err(_call(system, proc, "fs.read", path="bomb.docx"), ErrorCode.E_TOOBIG)
    assert "unpacks to 8388" in message and "refused unread" in message


def test_a_huge_document_is_refused_unread(
    system: System, proc: Process, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmos.syscalls.fs as fs_mod

    monkeypatch.setattr(fs_mod, "DOCUMENT_MAX_BYTES", 1000)
    samples.make(workspace / "big.pdf", {"pages": ["word " * 400]})
    _err(_call(system, proc, "fs.read", path="big.pdf"), ErrorCode.E_TOOBIG)


def test_a_conversion_that_takes_too_long_is_stopped(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents_mod, "DOCUMENT_TIMEOUT_S", 0.05)
    samples.make(workspace / "scan.pdf", {"pages": ["slow"], "scanned": True})
    with pytest.raises(documents_mod.LlmosError) as caught:
        Documents().read((workspace / "scan.pdf").read_bytes(), "pdf", "scan.pdf")
    assert caught.value.code == ErrorCode.E_TIMEOUT


@pytest.mark.skipif(landlock_abi() < 1, reason="the walls need Landlock")
def test_the_converter_sandbox_can_read_no_file_of_the_person(tmp_path: Path) -> None:
    private = tmp_path / "private.txt"
    private.write_text("ssh key")
    package = str(Path(documents_mod.__file__).resolve().parent.parent)
    with Sandbox(None, program=sys.executable, read=[package]) as sandbox:
        code = (
            "import llmos.documents.convert, sys\n"
            f"try:\n    open({str(private)!r}).read()\nexcept PermissionError:\n    sys.exit(7)\n"
        )
        done = subprocess.run(
            [sys.executable, "-I", "-c", code],
            env=sandbox.env,
            cwd=sandbox.temp,
            preexec_fn=sandbox.enter,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 7, done.stderr


def test_kind_is_told_by_name_and_bytes_together() -> None:
    pdf = samples.pdf(["x"])
    assert kind_of("a.pdf", pdf[:64]) == "pdf"
    assert kind_of("renamed.txt", pdf[:64]) == "pdf"
    assert kind_of("notes.pdf", b"just text") is None
    assert kind_of("odd.pdf", b"junk before it\n%PDF-1.4") == "pdf"
    assert kind_of("notes.md", b"A PDF starts with %PDF-1.7, then...") is None
    assert kind_of("a.docx", b"PK\x03\x04rest") == "docx"
    assert kind_of("a.docx", b"plain text") is None
    assert kind_of("photo.jpg", b"\xff\xd8\xff\xe0") == "image"
    assert kind_of("notes.txt", b"hello") is None
    assert where("[page 1]\na\n[page 2]\nb", 4) == "page 2"
    assert where("[page 1]\na\n[page 2]\nb", 2) == "page 1"
    assert where("plain\ntext", 2) is None


def test_a_sheet_sums_up_each_numeric_column_with_the_rows_labels() -> None:
    from llmos.documents.convert import Limits, xlsx

    data = samples.xlsx(
        {
            "2026": [
                ["month", "sales", "note"],
                ["January", 4100, "slow"],
                ["February", 3900, None],
                ["March", 5230, "fair"],
            ],
            "Loose": [[1, 2], [3, 4]],
        }
    )
    first, loose = xlsx(data, Limits(max_chars=10_000, ocr_pages=0))
    assert first.text.splitlines() == [
        "sales over 3 rows: total 13230, highest 5230 (March), lowest 3900 (February)",
        "month | sales | note",
        "month: January | sales: 4100 | note: slow",
        "month: February | sales: 3900",
        "month: March | sales: 5230 | note: fair",
    ]
    assert loose.text == "1 | 2\n3 | 4"  # no header row: rows as they are, no summary
