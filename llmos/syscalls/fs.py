"""The fs family: files and folders, confined to the calling process's workspace."""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from llmos.atomic import TEMP_MARK, write_all, write_atomic_at
from llmos.documents import Documents, Extracted, kind_of
from llmos.errors import ErrorCode, LlmosError, os_error
from llmos.limits import (
    DOCUMENT_MAX_BYTES,
    MAX_COUNT_BYTES,
    MAX_LIST_ENTRIES,
    MAX_READ_BYTES,
    MAX_WRITE_BYTES,
    STAT_PREVIEW_CHARS,
    STAT_PREVIEW_MAX_BYTES,
)
from llmos.security.workspace import O_CLOEXEC, Located, Workspace, open_dir_at
from llmos.syscalls.base import (
    Quiet,
    Registrar,
    Syscall,
    existing_path,
    target_path,
)
from llmos.syscalls.context import Process
from llmos.syscalls.hooks import hookimpl

if TYPE_CHECKING:
    from llmos.syscalls.fs_search import FsSearch

log = logging.getLogger(__name__)

# O_NONBLOCK: opening a FIFO (or one swapped in) must not hang the caller; no effect on files.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
PathArg = Field(description="Path inside the workspace, e.g. notes.txt or docs/a.md")
# Sniffed for a NUL byte to tell a binary file from text, as grep and git do.
BINARY_SNIFF_BYTES = 8192
# fs.list's summary names this many extensions, the most common first, and counts the rest.
SUMMARY_EXTENSIONS = 5


class FsRead(Syscall):
    """Read a text file's content (optionally a byte range of it).

    PDF, Office, OpenDocument and HTML files and the text in images come converted to text
    (llmos.documents)."""

    needs_files = True
    call: Literal["fs.read"] = "fs.read"
    path: str = existing_path("file", description="File to read, e.g. notes.txt or docs/a.md")
    offset: int = Field(default=0, ge=0, description="Byte offset to start at.")
    limit: int | None = Field(default=None, ge=1, description="Most bytes to return.")


class FsReadResult(Quiet):
    """The text read, its exact line and word counts, and whether more remains. A document's
    text has no `lines`: the lines of a conversion are no count a person means (the 1.5B model
    called a two-row table's four lines "4 items")."""

    quiet = frozenset({"format", "pages", "ocr", "lines"})

    path: str
    size: int
    lines: int | None
    words: int
    text: str
    offset: int
    bytes_read: int
    truncated: bool
    next_offset: int | None = None
    format: str | None = None
    """The document format the text was converted from ("pdf", "docx", "image"...); None for
    a text file. Offsets then count bytes of the converted text, not of the file."""
    pages: int | None = None
    """Pages, sheets or slides in the document; its text marks each with a "[page N]" line."""
    ocr: bool | None = None
    """True when some of the text was read from pixels (an image, a scanned page)."""


class FsWrite(Syscall):
    """Write text to a file, creating missing folders (overwrite, append, or create only if new)."""

    changes_files = True
    call: Literal["fs.write"] = "fs.write"
    path: str = PathArg
    content: str = Field(description="The full text to write.")
    mode: Literal["overwrite", "append", "create"] = Field(
        default="overwrite", description="overwrite (default), append, or create (fail if exists)."
    )

    def replaces(self) -> tuple[str, ...]:
        """An overwrite replaces the file at `path`."""
        return (self.path,) if self.mode == "overwrite" else ()


class FsWriteResult(BaseModel):
    """Where the text went."""

    path: str
    bytes_written: int
    created: bool


class FsAppend(Syscall):
    """Add text as new line(s) at the end of an existing file, e.g. an item to a list or todo."""

    changes_files = True
    needs_files = True
    call: Literal["fs.append"] = "fs.append"
    path: str = existing_path("file", real=True, description="File to add to, e.g. todo.md")
    text: str = Field(min_length=1, description="The text to add, e.g. one new line.")


class FsAppendResult(BaseModel):
    """What was added and how long the file is now; `added` is the text as added when it
    was made an item of the list the file ends with."""

    path: str
    added: str | None = None
    bytes_added: int
    lines: int | None
    created: bool


class FsEdit(Syscall):
    """Change part of a file: replace the exact text old with new (a word, a value, a line)."""

    changes_files = True
    needs_files = True
    call: Literal["fs.edit"] = "fs.edit"
    path: str = existing_path("file", real=True, description="File to change.")
    old: str = Field(min_length=1, description="The exact text now in the file.")
    new: str = Field(description="The text to put in its place (empty to remove it).")
    all: bool = Field(default=False, description="Replace every occurrence, not just one.")


class FsEditResult(BaseModel):
    """How many replacements were made and how long the file is now."""

    path: str
    replacements: int
    lines: int


class FsList(Syscall):
    """List the files and folders in a folder."""

    needs_files = True
    call: Literal["fs.list"] = "fs.list"
    path: str = existing_path(
        "dir", default=".", description="Folder to list; the workspace root by default."
    )
    pattern: str | None = Field(default=None, description="Glob such as *.txt to filter names.")
    recursive: bool = Field(default=False, description="Include sub-folders' contents.")


class FsEntry(BaseModel):
    """One listed entry."""

    path: str
    type: Literal["file", "dir", "link", "other"]
    size: int


class FsListResult(BaseModel):
    """A folder's entries, sorted, after a `summary` that counts them ("3 files (2 .py, 1
    .txt), 1 folder"): it comes first so it is still there when a long listing is cut."""

    path: str
    summary: str
    entries: list[FsEntry]
    truncated: bool


class FsStat(Syscall):
    """Show a file's or folder's type, size, line count and modification time (and a small text
    file's first lines)."""

    needs_files = True
    call: Literal["fs.stat"] = "fs.stat"
    path: str = existing_path("any", description="File or folder, e.g. notes.txt or docs")


class FsStatResult(Quiet):
    """Metadata of one path; `lines` is counted for a text file (None for anything else), and
    `preview` is a small UTF-8 text file's start: all of it when short, else its first lines
    and "..." (None for a binary, a folder, a link or a file over STAT_PREVIEW_MAX_BYTES).
    A document's (PDF, Office...) `preview` is of its text, with its `format` and `pages` (and
    no `lines`: the 1.5B model read a 2-page PDF's 7 lines as "7 pages"); an image's only
    when its text was read before (OCR is not run for a stat).
    `modified` is local time, ISO 8601 to the second ("2026-03-05 14:02:11+01:00")."""

    path: str
    type: Literal["file", "dir", "link", "other"]
    size: int
    lines: int | None = None
    modified: str
    mode: str
    preview: str | None = None
    format: str | None = None
    pages: int | None = None
    quiet = frozenset({"format", "pages"})


class FsDelete(Syscall):
    """Delete a file or folder (recursive=true if not empty), or every file a pattern matches."""

    changes_files = True
    effects = frozenset({"delete"})
    needs_files = True
    call: Literal["fs.delete"] = "fs.delete"
    path: str = existing_path(
        "any",
        patterns=True,
        named=True,
        description="File or folder to delete, or a pattern like *.tmp",
    )
    recursive: bool = Field(default=False, description="Delete a folder with everything in it.")


class FsDeleteResult(BaseModel):
    """What was deleted: a count of entries (a folder's contents included) and, for a pattern,
    every path it matched."""

    path: str
    deleted: int
    files: list[str] | None = None


class FsMove(Syscall):
    """Move or rename a file or folder (into dst if dst is an existing folder)."""

    changes_files = True
    needs_files = True
    call: Literal["fs.move"] = "fs.move"
    src: str = existing_path(
        "any",
        patterns=True,
        description="Path to move, or a pattern like *.log (then dst is a folder).",
    )
    dst: str = target_path(
        description="New path, or a folder to move into (existing, or ending in /)."
    )
    overwrite: bool = Field(default=False, description="Replace an existing file at dst.")

    def replaces(self) -> tuple[str, ...]:
        """With `overwrite`, the file at `dst`."""
        return (self.dst,) if self.overwrite else ()


class FsCopy(Syscall):
    """Copy a file (into dst if dst is an existing folder)."""

    changes_files = True
    needs_files = True
    call: Literal["fs.copy"] = "fs.copy"
    src: str = existing_path(
        "file",
        patterns=True,
        description="File to copy, or a pattern like *.txt (then dst is a folder).",
    )
    dst: str = target_path(
        description="New path, or a folder to copy into (existing, or ending in /)."
    )
    overwrite: bool = Field(default=False, description="Replace an existing file at dst.")

    def replaces(self) -> tuple[str, ...]:
        """With `overwrite`, the file at `dst`."""
        return (self.dst,) if self.overwrite else ()


class FsMoveResult(BaseModel):
    """Where it went (for a pattern: every file it matched); a copied text file's exact line
    count, so "copy it, then tell me how many lines it has" has the number in hand."""

    src: str
    dst: str
    files: list[str] | None = None
    lines: int | None = None


class FsMkdir(Syscall):
    """Create a folder (and its parents)."""

    changes_files = True
    makes_folders = True
    call: Literal["fs.mkdir"] = "fs.mkdir"
    path: str = Field(description="Folder to create, e.g. docs/2024")


class FsMkdirResult(BaseModel):
    """The folder and whether it is new."""

    path: str
    created: bool


def _kind(mode: int) -> Literal["file", "dir", "link", "other"]:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _display(rel: str) -> str:
    return rel or "."


def _require(loc: Located, shown: str) -> os.stat_result:
    info = loc.lstat()
    if info is None:
        raise LlmosError(ErrorCode.E_NOENT, f"{shown} does not exist")
    return info


def _open_file(loc: Located, shown: str) -> int:
    """Open a regular file for reading; a FIFO, socket or device is E_INVAL."""
    try:
        fd = os.open(loc.name, FILE_FLAGS, dir_fd=loc.dir_fd)
    except OSError as exc:
        raise os_error(exc, shown) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LlmosError(ErrorCode.E_INVAL, f"{shown} is not a regular file")
    return fd


def _open_dir(loc: Located, shown: str) -> int:
    try:
        return open_dir_at(loc.dir_fd, loc.name)
    except OSError as exc:
        raise os_error(exc, shown) from None


def _decode_text(
    data: bytes, shown: str, at_start: bool, at_eof: bool = False
) -> tuple[str, int, int]:
    """Decode UTF-8, tolerating a character cut at either end of the range; binary is E_INVAL.

    A character cut at the end of the file itself (not just of the range) is read as U+FFFD, so
    paging with next_offset always makes progress. Returns (text, bytes skipped at the start,
    bytes decoded after them).
    """
    skipped = 0
    if not at_start:
        while skipped < 3 and skipped < len(data) and (data[skipped] & 0xC0) == 0x80:
            skipped += 1
        data = data[skipped:]
    if b"\x00" in data:
        raise LlmosError(ErrorCode.E_INVAL, f"{shown} is a binary file, not text")
    try:
        return data.decode("utf-8"), skipped, len(data)
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            head = data[: exc.start].decode("utf-8")
            if at_eof:
                return head + "\ufffd", skipped, len(data)
            return head, skipped, exc.start
        raise LlmosError(
            ErrorCode.E_INVAL, f"{shown} is not UTF-8 text (binary at byte {exc.start})"
        ) from None


def _count_lines(text: str) -> int:
    """Lines as an editor numbers them: a last line without a final newline counts too."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def _read_capped(fd: int, cap: int) -> bytes | None:
    """The whole file behind `fd` from its start, or None when it holds more than `cap` bytes."""
    chunks: list[bytes] = []
    total = 0
    while total <= cap:
        chunk = os.pread(fd, min(cap + 1 - total, 1 << 20), total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return None if total > cap else b"".join(chunks)


def _count_data_lines(data: bytes | None) -> int | None:
    """The exact line count of a text file's bytes; None for a binary (or unread) one."""
    if data is None or b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return None
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _count_file_lines(fd: int) -> int | None:
    """A text file's exact line count (up to MAX_COUNT_BYTES); None for a binary or larger one."""
    return _count_data_lines(_read_capped(fd, MAX_COUNT_BYTES))


def _preview(data: bytes) -> str | None:
    """A small UTF-8 text file's start: all of it when it has at most STAT_PREVIEW_CHARS
    characters, else its whole lines within that many and "..." (cut inside a line only when
    no line ends early enough); None for a binary, non-UTF-8 or over-large file."""
    if len(data) > STAT_PREVIEW_MAX_BYTES or b"\x00" in data:
        return None
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) <= STAT_PREVIEW_CHARS:
        return text
    head = text[: STAT_PREVIEW_CHARS + 1]  # +1: a line may end right at the limit
    end = head.rfind("\n")
    if end >= STAT_PREVIEW_CHARS // 3:
        return head[: end + 1] + "..."
    head = head[:STAT_PREVIEW_CHARS]
    space = head.rfind(" ")
    return head[: space if space >= STAT_PREVIEW_CHARS // 2 else len(head)].rstrip() + "..."


def fs_read(call: FsRead, process: Process) -> FsReadResult:
    """Read up to `limit` (capped at MAX_READ_BYTES) bytes of text from `offset`."""
    with process.workspace.locate(call.path) as loc:
        info = _require(loc, call.path)
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.path} is a folder; use fs.list")
        fd = _open_file(loc, call.path)
        try:
            size = os.fstat(fd).st_size
            want = min(call.limit or MAX_READ_BYTES, MAX_READ_BYTES)
            whole: bytes | None = None
            kind = kind_of(loc.rel, os.pread(fd, BINARY_SNIFF_BYTES, 0))
            if kind is None:
                data = os.pread(fd, want, call.offset)
            else:
                whole = _read_capped(fd, DOCUMENT_MAX_BYTES)
        finally:
            os.close(fd)
    extras: dict[str, Any] = {}
    length = size
    if kind is not None:
        if whole is None:
            raise LlmosError(
                ErrorCode.E_TOOBIG,
                f"{call.path} is {size} bytes; documents over {DOCUMENT_MAX_BYTES} are not read",
            )
        extracted = (process.services.get(Documents) or Documents()).read(whole, kind, call.path)
        converted = extracted.text.encode("utf-8")
        length = len(converted)
        data = converted[call.offset : call.offset + want]
        extras = {"format": kind, "pages": extracted.parts, "ocr": extracted.ocr or None}
    at_eof = call.offset + len(data) >= length
    text, skipped, used = _decode_text(data, call.path, call.offset == 0, at_eof)
    end = call.offset + skipped + used
    truncated = end < length
    return FsReadResult(
        path=loc.rel,
        size=size,
        lines=_count_lines(text) if kind is None else None,
        words=len(text.split()),
        text=text,
        offset=call.offset,
        bytes_read=end - call.offset,
        truncated=truncated,
        next_offset=end if truncated else None,
        **extras,
    )


def _check_write_size(size: int) -> None:
    if size > MAX_WRITE_BYTES:
        raise LlmosError(
            ErrorCode.E_TOOBIG, f"{size} bytes is over the {MAX_WRITE_BYTES}-byte write limit"
        )


def _file_target(loc: Located, shown: str) -> os.stat_result | None:
    """What a write to `loc` would replace (None: nothing yet); E_ISDIR for a folder."""
    info = None if loc.is_root or loc.name == "." else loc.lstat()
    if loc.is_root or loc.name == "." or (info is not None and stat.S_ISDIR(info.st_mode)):
        raise LlmosError(ErrorCode.E_ISDIR, f"{shown} is a folder")
    return info


def fs_write(call: FsWrite, process: Process) -> FsWriteResult:
    """Write atomically (temp file, fsync, rename); append writes in place with O_APPEND."""
    data = call.content.encode("utf-8")
    _check_write_size(len(data))
    with process.workspace.locate(call.path, create_parents=True) as loc:
        info = _file_target(loc, call.path)
        created = info is None
        if call.mode == "append":
            kind = stat.S_IFMT(info.st_mode) if info is not None else stat.S_IFREG
            if kind not in (stat.S_IFREG, stat.S_IFLNK):  # a link meets O_NOFOLLOW below
                raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is not a regular file")
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
            flags |= O_CLOEXEC
            try:
                fd = os.open(loc.name, flags, 0o644, dir_fd=loc.dir_fd)
                try:
                    opened = os.fstat(fd)
                    if not stat.S_ISREG(opened.st_mode):
                        raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is not a regular file")
                    _one_link(opened, call.path)
                    write_all(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise os_error(exc, call.path) from None
        else:
            if call.mode == "create" and info is not None:
                raise LlmosError(ErrorCode.E_EXISTS, f"{call.path} already exists")
            mode = stat.S_IMODE(info.st_mode) if info is not None else 0o644
            try:
                write_atomic_at(
                    loc.dir_fd, loc.name, data, exclusive=call.mode == "create", mode=mode
                )
            except LlmosError as exc:
                raise LlmosError(exc.code, f"{call.path}: {exc.message}") from None
            except OSError as exc:
                raise os_error(exc, call.path) from None
        return FsWriteResult(path=loc.rel, bytes_written=len(data), created=created)


LIST_ITEM = re.compile(r"(?P<indent>[ \t]*)(?P<mark>[-*+] \[[ xX]\] |[-*+] |(?P<n>\d{1,6})([.)]) )")
"""A list item's marker at the start of a line: a bullet, a task box or a number."""

LIST_TAIL_BYTES = 4096
"""How much of a file's end fs.append reads to see whether it ends with a list."""


def _list_marker(tail: bytes) -> str:
    """The marker a new item after the last line of `tail` takes ("- ", "- [ ] ", "4. ", ...),
    or "" when the file does not end with a list item."""
    last = next(
        (ln for ln in reversed(tail.decode("utf-8", "replace").splitlines()) if ln.strip()), ""
    )
    item = LIST_ITEM.match(last)
    if item is None:
        return ""
    mark = item["mark"]
    if item["n"] is not None:
        mark = f"{int(item['n']) + 1}{mark[len(item['n']) :]}"
    elif "[" in mark:
        mark = mark[:2] + "[ ] "
    return item["indent"] + mark


def _as_item(text: str, marker: str) -> str:
    """`text` as a new item of a list whose items start with `marker`: a single line that
    has no marker of its own gets it; anything else is added as written."""
    if not marker or "\n" in text.strip("\n") or LIST_ITEM.match(text):
        return text
    return marker + text.lstrip()


def _one_link(info: os.stat_result, path: str) -> None:
    """E_PERM for a file with other hard links: writing it in place would change them too,
    and one may be a file outside the workspace (a replacing write only replaces this name)."""
    if info.st_nlink > 1:
        raise LlmosError(
            ErrorCode.E_PERM,
            f"{path} has {info.st_nlink - 1} other hard link(s), maybe outside the workspace: "
            "it is not written in place (fs.write overwrite or fs.edit replace it instead)",
        )


def fs_append(call: FsAppend, process: Process) -> FsAppendResult:
    """Append in place (O_APPEND), first ending an unfinished last line, so the added text
    always starts and ends a line of its own; one line added to a file that ends with a
    list item becomes an item in the same style ("buy milk" after "- eggs" is "- buy milk")."""
    _check_write_size(len(call.text.encode("utf-8")) + 1)
    with process.workspace.locate(call.path, create_parents=True) as loc:
        info = _file_target(loc, call.path)
        kind = stat.S_IFMT(info.st_mode) if info is not None else stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFLNK):  # a link meets O_NOFOLLOW below
            raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is not a regular file")
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
        try:
            fd = os.open(loc.name, flags, 0o644, dir_fd=loc.dir_fd)
            try:
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode):
                    raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is not a regular file")
                _one_link(opened, call.path)
                size = opened.st_size
                tail = os.pread(fd, LIST_TAIL_BYTES, max(0, size - LIST_TAIL_BYTES))
                text = _as_item(call.text, _list_marker(tail))
                data = text.encode("utf-8") + (b"" if text.endswith("\n") else b"\n")
                _check_write_size(len(data))
                if size and not tail.endswith(b"\n"):
                    data = b"\n" + data
                write_all(fd, data)
                lines = _count_file_lines(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise os_error(exc, call.path) from None
        return FsAppendResult(
            path=loc.rel,
            added=text if text != call.text else None,
            bytes_added=len(data),
            lines=lines,
            created=info is None,
        )


def _occurrence_lines(text: str, old: str, most: int = 5) -> list[int]:
    """The line numbers where the first `most` occurrences of `old` start."""
    lines: list[int] = []
    at = text.find(old)
    while at >= 0 and len(lines) < most:
        lines.append(text.count("\n", 0, at) + 1)
        at = text.find(old, at + len(old))
    return lines


def _closest_line(text: str, old: str) -> str:
    """A hint for text that is not in a file: the line most like the first line of `old`."""
    want = next((part.strip() for part in old.splitlines() if part.strip()), old.strip())
    lines = text.splitlines()
    squeezed = " ".join(want.split()).lower()
    for number, line in enumerate(lines, start=1):
        if squeezed and squeezed in " ".join(line.split()).lower():
            return f"; line {number} has it with other case or spacing: {line.strip()[:120]!r}"
    stripped = [line.strip() for line in lines]
    close = difflib.get_close_matches(want, stripped, n=1, cutoff=0.5)
    if not close:
        return ""
    return f"; the closest is line {stripped.index(close[0]) + 1}: {close[0][:120]!r}"


def fs_edit(call: FsEdit, process: Process) -> FsEditResult:
    """Replace exact text (one unique occurrence, or every one with `all`), written atomically
    and keeping the file's mode; absent text is E_NOENT with the closest line as a hint."""
    with process.workspace.locate(call.path) as loc:
        info = _require(loc, call.path)
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.path} is a folder")
        fd = _open_file(loc, call.path)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            data = _read_capped(fd, MAX_WRITE_BYTES)
        finally:
            os.close(fd)
        if data is None:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{call.path} is over the {MAX_WRITE_BYTES}-byte write limit"
            )
        if b"\x00" in data:
            raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is a binary file, not text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LlmosError(
                ErrorCode.E_INVAL, f"{call.path} is not UTF-8 text (binary at byte {exc.start})"
            ) from None
        old, new = call.old, call.new
        count = text.count(old)
        if not count and "\r\n" in text and "\n" in old and "\r\n" not in old:
            # The model writes "\n"; a file saved on Windows has "\r\n" between its lines.
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            count = text.count(old)
        if not count:
            raise LlmosError(
                ErrorCode.E_NOENT,
                f"{call.path} does not contain that text{_closest_line(text, call.old)}; "
                "fs.read it and copy the exact text",
            )
        if count > 1 and not call.all:
            lines = ", ".join(str(n) for n in _occurrence_lines(text, old))
            # The whole call to copy, not "pass all=true": a small model copies an explicit
            # call, and it ignored the advice (measured on the kernel's requests).
            every = {"call": "fs.edit", "path": loc.rel, "old": call.old, "new": call.new}
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"the text occurs {count} times in {call.path} (lines {lines}"
                f"{', ...' if count > 5 else ''}); to change just one, give more of the text "
                "around it, enough to be found once; to change every one: "
                + json.dumps({**every, "all": True}, ensure_ascii=False),
            )
        edited = text.replace(old, new) if call.all else text.replace(old, new, 1)
        out = edited.encode("utf-8")
        _check_write_size(len(out))
        if edited != text:
            try:
                write_atomic_at(loc.dir_fd, loc.name, out, mode=mode)
            except LlmosError as exc:
                raise LlmosError(exc.code, f"{call.path}: {exc.message}") from None
            except OSError as exc:
                raise os_error(exc, call.path) from None
        return FsEditResult(path=loc.rel, replacements=count, lines=_count_lines(edited))


def _walk(
    dir_fd: int, recursive: bool, hidden: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, os.stat_result, int]]:
    """(relative path, name, lstat, parent dir fd) of each entry below `dir_fd`, sorted, never
    following links, leaving out the `hidden` paths (relative to `dir_fd`) and all below them.
    The parent fd is valid only until the next item is taken."""
    for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=dir_fd, follow_symlinks=False):
        base = "" if dirpath == "." else dirpath[2:] + "/"
        dirnames[:] = sorted(d for d in dirnames if base + d not in hidden)
        for name in sorted(dirnames + filenames):
            if base + name in hidden:
                continue
            try:
                info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield base + name, name, info, dfd
        if not recursive:
            return


def _glob_match(pattern: str | None, rel: str, name: str) -> bool:
    if pattern is None:
        return True
    target = rel if "/" in pattern else name
    return fnmatch.fnmatch(target, pattern)


def _is_temp(name: str) -> bool:
    return TEMP_MARK in name


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _summary(entries: Sequence[FsEntry], truncated: bool) -> str:
    """What a listing holds, counted, e.g. "3 files (2 .py, 1 .txt), 1 folder": asked "how many
    python files are in src?", the model read the count here instead of miscounting entries."""
    kinds = {kind: sum(e.type == kind for e in entries) for kind in ("file", "dir", "link")}
    extensions: dict[str, int] = {}
    for entry in entries:
        if entry.type == "file":
            ext = os.path.splitext(entry.path.rpartition("/")[2])[1].lower()
            extensions[ext] = extensions.get(ext, 0) + 1
    ranked = sorted(extensions.items(), key=lambda item: (-item[1], item[0] == "", item[0]))
    shown = [f"{n} {ext or 'without extension'}" for ext, n in ranked[:SUMMARY_EXTENSIONS]]
    rest = sum(n for _, n in ranked[SUMMARY_EXTENSIONS:])
    if rest:
        shown.append(f"{rest} other")
    parts = []
    if kinds["file"]:
        parts.append(_plural(kinds["file"], "file") + f" ({', '.join(shown)})")
    if kinds["dir"]:
        parts.append(_plural(kinds["dir"], "folder"))
    if kinds["link"]:
        parts.append(_plural(kinds["link"], "link"))
    others = len(entries) - sum(kinds.values())
    if others:
        parts.append(f"{others} other")
    text = ", ".join(parts) or "nothing"
    return f"at least {text} (the listing stops at {len(entries)} entries)" if truncated else text


def fs_list(call: FsList, process: Process) -> FsListResult:
    """List entries (optionally recursive and glob-filtered), capped at MAX_LIST_ENTRIES."""
    ws = process.workspace
    with ws.locate(call.path) as loc:
        info = _require(loc, call.path)
        if not stat.S_ISDIR(info.st_mode):
            entry = FsEntry(path=loc.rel, type=_kind(info.st_mode), size=info.st_size)
            return FsListResult(
                path=loc.rel, summary=_summary([entry], False), entries=[entry], truncated=False
            )
        fd = _open_dir(loc, call.path)
        entries: list[FsEntry] = []
        truncated = False
        try:
            for rel, name, st, _dfd in _walk(fd, call.recursive, ws.hidden_below(loc.rel)):
                if _is_temp(name) or not _glob_match(call.pattern, rel, name):
                    continue
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    break
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                entries.append(FsEntry(path=rel, type=_kind(st.st_mode), size=size))
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.path.split("/"))
        return FsListResult(
            path=_display(loc.rel),
            summary=_summary(entries, truncated),
            entries=entries,
            truncated=truncated,
        )


def fs_stat(call: FsStat, process: Process) -> FsStatResult:
    """Stat a path without following a final symlink; count a text file's lines and show the
    start of a small one (the model answered questions about content from the size alone,
    inventing the rest, when stat showed none of it)."""
    with process.workspace.locate(call.path, follow=False) as loc:
        info = _require(loc, call.path)
        lines = preview = None
        extras: dict[str, Any] = {}
        if stat.S_ISREG(info.st_mode) and info.st_size <= max(MAX_COUNT_BYTES, DOCUMENT_MAX_BYTES):
            try:
                fd = _open_file(loc, call.path)
            except LlmosError:  # unreadable or swapped meanwhile: the metadata still stands
                fd = -1
            if fd >= 0:
                try:
                    # A document is read whole for its text; any other file only up to
                    # MAX_COUNT_BYTES (a 60 MB archive is not read to be thrown away).
                    kind = kind_of(loc.rel, os.pread(fd, BINARY_SNIFF_BYTES, 0))
                    data = _read_capped(fd, MAX_COUNT_BYTES if kind is None else DOCUMENT_MAX_BYTES)
                finally:
                    os.close(fd)
                if kind is not None and data is not None:
                    extracted = _document_preview(process, data, kind, call.path)
                    data = None if extracted is None else extracted.text.encode("utf-8")
                    if extracted is not None:
                        extras = {"format": kind, "pages": extracted.parts}
                lines = _count_data_lines(data) if kind is None else None
                preview = None if data is None else _preview(data)
        return FsStatResult(
            path=_display(loc.rel),
            type=_kind(info.st_mode),
            size=info.st_size,
            lines=lines,
            modified=_local_time(info.st_mtime),
            mode=stat.filemode(info.st_mode),
            preview=preview,
            **extras,
        )


def _local_time(moment: float) -> str:
    """A timestamp as local ISO 8601 to the second: the 1.5B model turned a float of seconds
    since 1970 into an invented "2024-01-01"."""
    return dt.datetime.fromtimestamp(moment).astimezone().isoformat(sep=" ", timespec="seconds")


def _document_preview(process: Process, data: bytes, kind: str, shown: str) -> Extracted | None:
    """A document's text for fs.stat's line count and preview: converted (cached) for a PDF or
    Office file, taken only from the cache for an image; None when it cannot be read."""
    reader = process.services.get(Documents) or Documents()
    try:
        return reader.cached(data, kind) if kind == "image" else reader.read(data, kind, shown)
    except LlmosError:
        return None


def _remove_tree(dir_fd: int) -> int:
    """Delete everything inside `dir_fd` bottom-up, never following links; returns the count."""
    count = 0
    for _, dirnames, filenames, dfd in os.fwalk(
        ".", dir_fd=dir_fd, topdown=False, follow_symlinks=False
    ):
        for name in filenames:
            os.unlink(name, dir_fd=dfd)
            count += 1
        for name in dirnames:
            if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dfd)
            else:
                os.rmdir(name, dir_fd=dfd)
            count += 1
    return count


def fs_delete(call: FsDelete, process: Process) -> FsDeleteResult:
    """Delete a file or link (the link itself), a folder (recursive for a non-empty one), or
    each entry a pattern matches, stopping at the first failure and saying what was done."""
    ws = process.workspace
    if _is_pattern(ws, call.path):
        done: list[str] = []
        count = 0
        for match in _expand(ws, call.path):
            try:
                one = fs_delete(FsDelete(path=match, recursive=call.recursive), process)
            except LlmosError as exc:
                before = f" (deleted before it: {', '.join(done)})" if done else ""
                raise LlmosError(exc.code, f"{match}: {exc.message}{before}") from None
            done.append(one.path)
            count += one.deleted
        return FsDeleteResult(path=call.path, deleted=count, files=done)
    with ws.locate(call.path, follow=False) as loc:
        if loc.is_root or loc.name == ".":
            raise LlmosError(ErrorCode.E_PERM, "the workspace root cannot be deleted")
        info = _require(loc, call.path)
        try:
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(loc.name, dir_fd=loc.dir_fd)
                return FsDeleteResult(path=loc.rel, deleted=1)
            count = 0
            ws.check_whole(loc.rel, call.path)
            if call.recursive:
                fd = _open_dir(loc, call.path)
                try:
                    count = _remove_tree(fd)
                finally:
                    os.close(fd)
            os.rmdir(loc.name, dir_fd=loc.dir_fd)
        except OSError as exc:
            err = os_error(exc, call.path)
            if err.code is ErrorCode.E_NOTEMPTY:
                raise LlmosError(
                    ErrorCode.E_NOTEMPTY, f"{call.path} is not empty; pass recursive=true"
                ) from None
            raise err from None
        return FsDeleteResult(path=loc.rel, deleted=count + 1)


def _destination(ws: Workspace, dst: str, src_name: str) -> str:
    """`dst`, or `dst/src_name` when `dst` is an existing folder (like mv and cp) or ends in
    "/" (a folder to put it in, made if missing: "move it into done/")."""
    with ws.locate(dst, create_parents=True) as probe:
        info = probe.lstat() if probe.name != "." else os.fstat(probe.dir_fd)
        if info is None and dst.endswith("/"):
            try:
                os.mkdir(probe.name, 0o777, dir_fd=probe.dir_fd)
            except OSError as exc:
                raise os_error(exc, dst) from None
            info = probe.lstat()
        if info is not None and stat.S_ISDIR(info.st_mode):
            # "./" so that a folder or file named like "~x" is not read as the home folder.
            return f"./{probe.rel}/{src_name}" if probe.rel else f"./{src_name}"
    return dst


GLOB_CHARS = frozenset("*?[")


def _is_pattern(ws: Workspace, path: str) -> bool:
    """Whether `path` is a pattern to expand (a file really named `a[1].txt` is not)."""
    if not any(c in GLOB_CHARS for c in path):
        return False
    try:
        with ws.locate(path, follow=False) as loc:
            return loc.lstat() is None
    except LlmosError:
        return True


def _expand(ws: Workspace, pattern: str) -> list[str]:
    """The entries of one folder whose names match the pattern's last part (like a shell's
    `mv *.log logs/`); patterns in folder names are refused."""
    folder, _, name = pattern.rpartition("/")
    if any(c in GLOB_CHARS for c in folder):
        raise LlmosError(ErrorCode.E_INVAL, f"{pattern}: only the last part may be a pattern")
    with ws.locate(folder or ".") as loc:
        _require(loc, folder or ".")
        fd = _open_dir(loc, folder or ".")
        try:
            hidden = ws.hidden_below(loc.rel)
            names = sorted(
                n
                for n in os.listdir(fd)
                if not _is_temp(n) and n not in hidden and fnmatch.fnmatchcase(n, name)
            )
        finally:
            os.close(fd)
    if not names:
        raise LlmosError(ErrorCode.E_NOENT, f"no files match {pattern}")
    return [f"{folder}/{n}" if folder else n for n in names]


def _each(
    ws: Workspace, src: str, dst: str, one: Callable[[str, str], FsMoveResult]
) -> FsMoveResult:
    """Run `one(src, folder)` for every match of the pattern `src`, into the folder `dst`
    (created if missing); stops at the first failure, reporting what was already done."""
    matches = _expand(ws, src)
    with ws.locate(dst, create_parents=True) as loc:
        info = loc.lstat() if loc.name != "." else os.fstat(loc.dir_fd)
        if info is None:
            os.mkdir(loc.name, 0o777, dir_fd=loc.dir_fd)
        elif not stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_NOTDIR, f"{dst} is not a folder (a pattern needs one)")
        folder = f"./{loc.rel}" if loc.rel else "."
    done: list[str] = []
    for match in matches:
        try:
            done.append(one(match, folder).dst)
        except LlmosError as exc:
            moved = f" (done before it: {', '.join(done)})" if done else ""
            raise LlmosError(exc.code, f"{match}: {exc.message}{moved}") from None
    return FsMoveResult(src=src, dst=_display(folder.removeprefix("./")), files=done)


def fs_copy(call: FsCopy, process: Process) -> FsMoveResult:
    """Copy a file (atomically written, never clobbering unless `overwrite`)."""
    ws = process.workspace
    if _is_pattern(ws, call.src):
        return _each(
            ws,
            call.src,
            call.dst,
            lambda s, d: fs_copy(FsCopy(src=s, dst=d, overwrite=call.overwrite), process),
        )
    with ws.locate(call.src) as src:
        info = _require(src, call.src)
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{call.src} is a folder; copy its files")
        if info.st_size > MAX_WRITE_BYTES:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{call.src} is over the {MAX_WRITE_BYTES}-byte write limit"
            )
        fd = _open_file(src, call.src)
        try:
            data = os.read(fd, MAX_WRITE_BYTES + 1)
        finally:
            os.close(fd)
        mode = stat.S_IMODE(info.st_mode)
        src_rel, src_name = src.rel, src.name
    with ws.locate(_destination(ws, call.dst, src_name), create_parents=True) as dst:
        if dst.rel == src_rel:
            raise LlmosError(ErrorCode.E_INVAL, f"{call.src} and {call.dst} are the same file")
        existing = dst.lstat()
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{dst.rel} is a folder")
        if existing is not None and not call.overwrite:
            raise LlmosError(ErrorCode.E_EXISTS, f"{dst.rel} already exists")
        try:
            write_atomic_at(dst.dir_fd, dst.name, data, exclusive=not call.overwrite, mode=mode)
        except LlmosError as exc:
            raise LlmosError(exc.code, f"{dst.rel}: {exc.message}") from None
        except OSError as exc:
            raise os_error(exc, call.dst) from None
        return FsMoveResult(src=src_rel, dst=dst.rel, lines=_count_data_lines(data))


def fs_move(call: FsMove, process: Process) -> FsMoveResult:
    """Rename within the workspace; never clobbers unless `overwrite`."""
    ws = process.workspace
    if _is_pattern(ws, call.src):
        return _each(
            ws,
            call.src,
            call.dst,
            lambda s, d: fs_move(FsMove(src=s, dst=d, overwrite=call.overwrite), process),
        )
    with ws.locate(call.src, follow=False) as src:
        if src.is_root or src.name == ".":
            raise LlmosError(ErrorCode.E_PERM, "the workspace root cannot be moved")
        src_info = _require(src, call.src)
        if stat.S_ISDIR(src_info.st_mode):
            ws.check_whole(src.rel, call.src)
        dst_path = _destination(ws, call.dst, src.name)
        with ws.locate(dst_path, follow=False, create_parents=True) as dst:
            if dst.rel == src.rel:
                return FsMoveResult(src=src.rel, dst=dst.rel)
            dst_info = dst.lstat()
            if dst_info is not None:
                if not call.overwrite:
                    raise LlmosError(ErrorCode.E_EXISTS, f"{dst.rel} already exists")
                if stat.S_ISDIR(dst_info.st_mode):
                    raise LlmosError(ErrorCode.E_ISDIR, f"{dst.rel} is a folder")
            try:
                if dst_info is None and not stat.S_ISDIR(src_info.st_mode):
                    os.link(
                        src.name,
                        dst.name,
                        src_dir_fd=src.dir_fd,
                        dst_dir_fd=dst.dir_fd,
                        follow_symlinks=False,
                    )
                    os.unlink(src.name, dir_fd=src.dir_fd)
                else:
                    os.rename(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd)
            except OSError as exc:
                raise os_error(exc, f"{call.src} -> {call.dst}") from None
            return FsMoveResult(src=src.rel, dst=dst.rel)


def fs_mkdir(call: FsMkdir, process: Process) -> FsMkdirResult:
    """Create a folder with its parents; an existing folder is fine."""
    with process.workspace.locate(call.path, create_parents=True) as loc:
        info = loc.lstat() if loc.name != "." else os.fstat(loc.dir_fd)
        if info is not None:
            if not stat.S_ISDIR(info.st_mode):
                raise LlmosError(ErrorCode.E_EXISTS, f"{call.path} exists and is not a folder")
            return FsMkdirResult(path=_display(loc.rel), created=False)
        try:
            os.mkdir(loc.name, 0o777, dir_fd=loc.dir_fd)
        except OSError as exc:
            raise os_error(exc, call.path) from None
        return FsMkdirResult(path=loc.rel, created=True)


def _path_resource(
    call: FsRead | FsWrite | FsAppend | FsEdit | FsList | FsStat | FsDelete | FsMkdir | FsSearch,
    process: Process,
) -> Iterable[str]:
    """The one path a call names (fs.search's folder too)."""
    return [process.workspace.relpath(call.path)]


def _move_resources(call: FsMove | FsCopy, process: Process) -> Iterable[str]:
    ws: Workspace = process.workspace
    return [ws.relpath(call.src), ws.relpath(call.dst)]


@hookimpl
def register_syscalls(register: Registrar) -> None:
    """Register the fs family, most used first (the kernel's prompt lists them in this order)."""
    from llmos.syscalls.fs_search import FsSearch, FsSearchResult, fs_search_here

    register(FsRead, fs_read, result=FsReadResult, resources=_path_resource)
    register(FsWrite, fs_write, result=FsWriteResult, resources=_path_resource)
    register(FsList, fs_list, result=FsListResult, resources=_path_resource)
    register(FsSearch, fs_search_here, result=FsSearchResult, resources=_path_resource)
    register(FsAppend, fs_append, result=FsAppendResult, resources=_path_resource)
    register(FsEdit, fs_edit, result=FsEditResult, resources=_path_resource)
    register(FsMove, fs_move, result=FsMoveResult, resources=_move_resources)
    register(FsCopy, fs_copy, result=FsMoveResult, resources=_move_resources)
    register(FsStat, fs_stat, result=FsStatResult, resources=_path_resource)
    register(FsDelete, fs_delete, result=FsDeleteResult, resources=_path_resource)
    register(FsMkdir, fs_mkdir, result=FsMkdirResult, resources=_path_resource)
