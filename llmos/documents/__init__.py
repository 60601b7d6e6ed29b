"""What people keep, read as text: PDFs, Office and OpenDocument files, web pages, and the text
in images (OCR), for `fs.read`, `image.text` and search.

The parsers run in a child process inside the tool sandbox (no workspace, no network, no
writes outside a private temp folder, capped memory and time; see `child.py`), because a
document is untrusted input to large C and Python parsers: a malicious PDF or a zip bomb costs
that process, never llmos. The child gets the bytes on stdin, so it never needs the person's
files. Text is extracted once per file version (keyed by the bytes' SHA-256) and cached under
LLMOS_HOME/documents, sealed with the memory key when memory is encrypted.

Libraries, measured on this machine (2 cores) on a 10-page, 400-line text PDF made by
`samples.py`, median of 5: PDFium (pypdfium2) 11.5 ms, pypdf 42 ms, pdfminer.six 441 ms, all
with the same words in the same order. PDFium also renders a page with no text layer for OCR,
which the pure-Python readers cannot. Office files: python-docx, openpyxl and python-pptx
(the libraries markitdown itself wraps, without its pandas and markdownify weight);
OpenDocument and HTML with the standard library.
OCR: RapidOCR on onnxruntime (already here for the memory index), whose models ship in its
wheel.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import (
    DOCUMENT_CACHE_BYTES,
    DOCUMENT_MAX_BYTES,
    DOCUMENT_MAX_CHARS,
    DOCUMENT_MAX_PARTS,
    DOCUMENT_MAX_UNZIPPED,
    DOCUMENT_MEMORY_BYTES,
    DOCUMENT_OCR_PAGES,
    DOCUMENT_TIMEOUT_S,
)

CONVERTER_VERSION = "1"
"""Part of every cache key: bump it when a converter's output changes, and old text is
simply not found again."""
CACHE_DIR = "documents"

SUFFIXES: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".docm": "docx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".pptx": "pptx",
    ".odt": "odt",
    ".ods": "ods",
    ".odp": "odp",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".gif": "image",
    ".bmp": "image",
    ".tif": "image",
    ".tiff": "image",
    ".webp": "image",
}
"""Which files are read through a converter, by name; `kind_of` also checks the bytes."""
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00")
MARKER = re.compile(r"^\[(page|sheet|slide) ([^\]\n]{1,120})\]$")
"""The line that starts each page, sheet or slide in a document's text."""


def kind_of(name: str, head: bytes) -> str | None:
    """The converter for a file called `name` starting with `head` (its first few KiB), or None
    for a file read as it is (text, or an unknown binary). The name proposes and the bytes
    must agree, so a PDF renamed .txt is still a PDF and a text file named .pdf is text."""
    kind = SUFFIXES.get(os.path.splitext(name)[1].lower())
    # A PDF may put its header anywhere in its first KiB, but a text file that merely mentions
    # "%PDF-" must stay text: only a .pdf gets that latitude.
    if head.lstrip()[:5] == b"%PDF-" or (kind == "pdf" and b"%PDF-" in head[:1024]):
        return "pdf"
    if kind in ("docx", "xlsx", "pptx", "odt", "ods", "odp"):
        return kind if head.startswith(b"PK\x03\x04") else None
    if kind == "image":
        is_webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
        return kind if head.startswith(IMAGE_MAGIC) or head[:4] == b"MM\x00*" or is_webp else None
    if kind == "html":
        return (
            kind if b"\x00" not in head[:8192] or head[:2] in (b"\xff\xfe", b"\xfe\xff") else None
        )
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    return None


@dataclass(frozen=True)
class OcrLine:
    """A line of text found in an image, with the recogniser's confidence and its box
    [left, top, right, bottom] in pixels."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Unit:
    """A page, sheet or slide of a document (label "page 2"), or all of it (label "")."""

    label: str
    text: str
    ocr: bool = False
    lines: tuple[OcrLine, ...] = ()


@dataclass(frozen=True)
class Extracted:
    """A document's text, by unit."""

    kind: str
    units: tuple[Unit, ...]
    cut: bool = False
    """True when the text stopped at DOCUMENT_MAX_CHARS."""
    cached: bool = field(default=False, compare=False)

    @property
    def text(self) -> str:
        """All of it as one text: each labelled unit starts with a "[page 2]" line."""
        if len(self.units) == 1 and not self.units[0].label:
            return self.units[0].text
        parts = []
        for unit in self.units:
            parts.append(f"[{unit.label}]\n{unit.text}".rstrip("\n") if unit.label else unit.text)
        return "\n\n".join(parts)

    @property
    def ocr(self) -> bool:
        """Whether any of the text came from OCR."""
        return any(unit.ocr for unit in self.units)

    @property
    def parts(self) -> int | None:
        """How many pages, sheets or slides (None for a flowing document or an image)."""
        return len(self.units) if any(unit.label for unit in self.units) else None


class Labels:
    """Where each page, sheet or slide of a document's text starts, found in one pass, so the
    label of many lines (every chunk of a 2,000-page PDF, every search hit) costs a bisect
    each instead of a scan of the text from its start."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []
        self.names: list[str] = []
        for number, row in enumerate(text.split("\n"), 1):
            if match := MARKER.match(row):
                self.starts.append(number)
                self.names.append(f"{match.group(1)} {match.group(2)}")

    def at(self, line: int) -> str | None:
        """The label holding 1-based `line`, as "page 3"; None before the first marker."""
        found = bisect.bisect_right(self.starts, line)
        return self.names[found - 1] if found else None


def where(text: str, line: int) -> str | None:
    """The page, sheet or slide of `text` (an `Extracted.text`) that holds its 1-based `line`,
    as "page 3"; None when the text has no such markers."""
    return Labels(text).at(line)


class Sealer(Protocol):
    """What the cache needs of the memory's cipher to keep document text encrypted."""

    def seal(self, record_id: str, purpose: str, data: bytes) -> bytes: ...

    def open(self, record_id: str, purpose: str, blob: bytes) -> bytes: ...

    def digest(self, purpose: str, value: str) -> str: ...


class Documents:
    """Reads documents through the sandboxed converter, with a cache of their text.

    `folder` None keeps nothing between calls; `sealer` encrypts what is kept and names each
    entry by a keyed digest, so the cache shows neither text nor which file it came from.
    """

    def __init__(self, folder: Path | None = None, sealer: Sealer | None = None) -> None:
        self.folder = folder
        self.sealer = sealer
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(folder, 0o700)
            except OSError as exc:
                raise LlmosError(ErrorCode.E_IO, f"document cache {folder}: {exc}") from exc

    def read(self, data: bytes, kind: str, shown: str) -> Extracted:
        """The text of `data`, a file of `kind` shown to the person as `shown`: from the cache
        when these bytes were read before, else converted in the sandbox and cached."""
        if len(data) > DOCUMENT_MAX_BYTES:
            raise LlmosError(
                ErrorCode.E_TOOBIG,
                f"{shown} is {len(data)} bytes; documents over {DOCUMENT_MAX_BYTES} are not read",
            )
        key = _key(data, kind)
        cached = self._load(key)
        if cached is not None:
            return cached
        answer = convert_in_sandbox(kind, data, shown)
        answer["kind"] = kind
        extracted = _from_answer(kind, answer)
        self._store(key, answer)
        return extracted

    def cached(self, data: bytes, kind: str) -> Extracted | None:
        """The text of `data` if it is in the cache, else None (nothing is converted)."""
        return self._load(_key(data, kind))

    def _entry(self, key: str) -> Path | None:
        if self.folder is None:
            return None
        name = self.sealer.digest("document", key) if self.sealer is not None else key
        return self.folder / f"{name}.json"

    def _load(self, key: str) -> Extracted | None:
        path = self._entry(key)
        if path is None:
            return None
        try:
            blob = path.read_bytes()
            if self.sealer is not None:
                blob = self.sealer.open(key, "document", blob)
            answer = json.loads(blob)
            extracted = _from_answer(answer["kind"], answer)
        except (OSError, ValueError, KeyError, TypeError, LlmosError):
            return None  # missing, damaged or from another key: converted again
        return Extracted(extracted.kind, extracted.units, extracted.cut, cached=True)

    def _store(self, key: str, answer: dict[str, Any]) -> None:
        path = self._entry(key)
        if path is None:
            return
        from llmos.atomic import write_atomic

        blob = json.dumps(answer).encode()
        if self.sealer is not None:
            blob = self.sealer.seal(key, "document", blob)
        # A cache that cannot be written only costs the next read a conversion.
        with contextlib.suppress(OSError, LlmosError):
            write_atomic(path, blob)
            self._trim()

    def _trim(self) -> None:
        """Keep the cache within DOCUMENT_CACHE_BYTES: the least recently written entries go
        first (a read of an old file converts it again)."""
        if self.folder is None:
            return
        entries = []
        with os.scandir(self.folder) as found:
            for entry in found:
                if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    entries.append((info.st_mtime_ns, info.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= DOCUMENT_CACHE_BYTES:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size


def _key(data: bytes, kind: str) -> str:
    """The cache key of a file version: its bytes, its kind and the converters' version."""
    return hashlib.sha256(f"{CONVERTER_VERSION}\x00{kind}\x00".encode() + data).hexdigest()


def _from_answer(kind: str, answer: dict[str, Any]) -> Extracted:
    units = tuple(
        Unit(
            label=str(unit["label"]),
            text=str(unit["text"]),
            ocr=bool(unit.get("ocr")),
            lines=tuple(
                OcrLine(str(line["text"]), float(line["confidence"]), _box(line["box"]))
                for line in unit.get("lines") or ()
            ),
        )
        for unit in answer["units"]
    )
    return Extracted(kind, units, bool(answer.get("cut")))


def _box(values: Any) -> tuple[int, int, int, int]:
    left, top, right, bottom = (int(v) for v in values)
    return (left, top, right, bottom)


def convert_in_sandbox(kind: str, data: bytes, shown: str) -> dict[str, Any]:
    """Run the converter child on `data` inside the sandbox; its answer, or the typed error it
    reported (a crash, a time-out or a memory blow-up included)."""
    from llmos.security.sandbox import Sandbox

    header = {
        "kind": kind,
        "max_chars": DOCUMENT_MAX_CHARS,
        "ocr_pages": DOCUMENT_OCR_PAGES,
        "max_unzipped": DOCUMENT_MAX_UNZIPPED,
        "max_entries": DOCUMENT_MAX_PARTS,
    }
    package = str(Path(__file__).resolve().parent.parent)
    options: dict[str, Any] = {
        "program": sys.executable,
        "read": [package],
        "timeout": DOCUMENT_TIMEOUT_S,
        "memory": DOCUMENT_MEMORY_BYTES,
    }
    try:
        sandbox = Sandbox(None, **options)
    except LlmosError as exc:
        if exc.code != ErrorCode.E_NOSYS:
            raise
        sandbox = Sandbox(None, landlock=False, **options)  # no Landlock here: limits only
    with sandbox:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "llmos.documents.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=sandbox.temp,
                env=sandbox.env,
                preexec_fn=sandbox.enter,  # why preexec_fn: see llmos.security.sandbox
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise LlmosError(ErrorCode.E_INTERNAL, f"the document converter: {exc}") from exc
        try:
            out, err = proc.communicate(
                json.dumps(header).encode() + b"\n" + data, timeout=DOCUMENT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise LlmosError(
                ErrorCode.E_TIMEOUT,
                f"reading {shown} took over {DOCUMENT_TIMEOUT_S:.0f} s and was stopped",
            ) from None
    try:
        answer: dict[str, Any] = json.loads(out) if out else {}
    except ValueError:
        answer = {}
    if "error" in answer:
        code = ErrorCode.__members__.get(str(answer["error"].get("code")), ErrorCode.E_INVAL)
        raise LlmosError(code, f"{shown}: {answer['error'].get('message', 'unreadable')}")
    if "units" not in answer:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [
            f"exit {proc.returncode}"
        ]
        if (proc.returncode and proc.returncode < 0) or "MemoryError" in last[0]:
            why = f"the converter was stopped ({last[0]})"
        else:
            why = last[0]
        raise LlmosError(ErrorCode.E_INVAL, f"{shown} could not be read: {why}"[:400])
    return answer
