"""Search by meaning over a workspace's own text files: chunks, embeddings and words in SQLite.

The files are the record and this index a cache of them: one SQLite database per workspace
under LLMOS_HOME/files (rebuilt when unreadable), not Chroma, because SQLite also gives the
FTS5 word ranking in the same transaction, opens in milliseconds, and survives `kill -9`; the
vectors are ranked exactly with numpy, as the memory's search within a session does. Every
search first re-scans the workspace with stat alone, re-reads only files whose (mtime, size)
changed, smallest first and for at most a time budget, and embeds only chunk texts it has not
embedded before, so appending to a log costs its new lines. Hits fuse the embedding's nearest
chunks with bm25's word ranks (reciprocal rank fusion), so a question in other words and a rare
exact word both find their lines. The embedder is the local model: nothing leaves the machine.
The walk opens each folder under its parent's handle and never follows a symlink; a file is
read through `Workspace.locate` with O_NOFOLLOW, so no link leads the index out.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.atomic import TEMP_MARK
from llmos.documents import SUFFIXES, Documents, Labels, kind_of, where
from llmos.errors import ErrorCode, LlmosError, os_error
from llmos.limits import (
    DOCUMENT_MAX_BYTES,
    FILE_INDEX_MAX_CHUNKS,
    FILE_INDEX_MAX_DEPTH,
    FILE_INDEX_MAX_FILE_BYTES,
    FILE_INDEX_MAX_FILES,
    FILE_SEARCH_BUILD_SECONDS,
    FILE_SEARCH_HIT_CHARS,
    FILE_SEARCH_MAX_K,
)
from llmos.memory.embedder import Embedder
from llmos.security.workspace import O_CLOEXEC, Workspace, open_dir_at
from llmos.syscalls.services import FileHit, FileSearchResult, ScanReport
from llmos.text import RRF_K

if TYPE_CHECKING:
    from llmos.config import Settings

log = logging.getLogger(__name__)

FILES_DIR = "files"
CHUNK_LINES = 8
"""A chunk holds at most this many lines..."""
CHUNK_CHARS = 1000
"""...and this many characters: all-MiniLM-L6-v2 reads 256 tokens, about 1,000 characters."""
PARAGRAPH_LINES = 3
"""A blank line ends a chunk of at least this many lines, so chunks follow paragraphs while a
list of one-line items with blanks between them does not become one chunk per item."""
EMBED_GROUP = 64
"""Chunks embedded and committed together (one embedder batch), so a long first build keeps
what it has done and a time budget is checked every few seconds."""
RACY_NS = 2_000_000_000
"""A file modified this recently when read may change again within the same mtime tick, so
its stat is not trusted next time: it is re-read (and re-embedded only if its bytes differ)."""
CANDIDATES = 100
"""How deep each ranking (embedding, words) goes before the two are fused."""
MAX_QUERY_WORDS = 32
SKIP_DIRS = frozenset({"node_modules", "__pycache__"})
"""Folders never indexed besides hidden ones (.git, .llmos, .venv...): tools' own files."""
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
INDEX_OCR_PIXELS = 3840 * 2160
"""Images up to a 4K screen are read by OCR for the meaning index; larger ones (photos) only
when a person or the kernel reads them."""
DOCUMENT_SNIFF_BYTES = 8192
"""Bytes enough to tell a document's format by its signature (see `kind_of`)."""
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
BUSY_TIMEOUT_MS = 10_000

_WORD = re.compile(r"\w+")
# Words too common to rank by: left in, they match nearly every chunk and push noise into the
# word ranking that fusion then rewards as much as a real match.
_STOPWORD_TEXT = """
a about an and any are as at be but by can could did do does for from get got had has have
how i if in into is it its me my no not of on or our s so some t than that the their them
then there these they this to was we were what when where which who why will with would
you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    text INTEGER NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks (path);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_words USING fts5(path, text, tokenize='porter unicode61');
"""


@dataclass(frozen=True)
class Chunk:
    """A few consecutive lines of a file (1-based, inclusive) and their text."""

    start_line: int
    end_line: int
    text: str


@dataclass(frozen=True)
class _Known:
    """What the index holds about one file."""

    mtime_ns: int
    size: int
    sha256: str
    model: str
    text: bool
    chunks: int


@dataclass
class _Pending:
    """A file read and chunked, waiting for its chunks' vectors."""

    path: str
    mtime_ns: int
    size: int
    sha256: str
    text: bool
    chunks: list[Chunk]
    old: _Known | None
    """What the index holds of this file now (its old chunks' vectors may be reused)."""


@dataclass
class _Vectors:
    """Every indexed chunk's id, path and vector as one matrix, for one index generation."""

    generation: str
    ids: list[int]
    paths: list[str]
    matrix: Any
    row_of: dict[int, int]


@dataclass
class _Scan:
    """Counters kept while one scan runs."""

    files: int = 0
    chunks: int = 0
    read: int = 0
    embedded: int = 0
    skipped: int = 0
    waiting: set[str] = field(default_factory=set)
    seen_files: int = 0
    notes: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    hidden: tuple[str, ...] = ()
    """Workspace paths never indexed: llmos's own state when it lies inside."""


def chunk_text(text: str) -> list[Chunk]:
    """Cut a file's text into chunks of at most CHUNK_LINES lines and CHUNK_CHARS characters.

    Lines are counted by "\\n" as editors and `sed -n` count them; a blank line ends a chunk
    of PARAGRAPH_LINES or more, so chunks tend to follow paragraphs; blank lines never start
    or end one. A line longer than CHUNK_CHARS becomes chunks of its own pieces.
    """
    chunks: list[Chunk] = []
    lines: list[str] = []
    start = 0
    size = 0

    def flush() -> None:
        nonlocal size
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            chunks.append(Chunk(start, start + len(lines) - 1, "\n".join(lines)))
        lines.clear()
        size = 0

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        blank = not line.strip()
        if lines and (
            len(lines) >= CHUNK_LINES
            or size + len(line) + 1 > CHUNK_CHARS
            or (blank and len(lines) >= PARAGRAPH_LINES)
        ):
            flush()
        if not lines and blank:
            continue
        if len(line) > CHUNK_CHARS:
            flush()
            for at in range(0, len(line), CHUNK_CHARS):
                chunks.append(Chunk(number, number, line[at : at + CHUNK_CHARS]))
            continue
        if not lines:
            start = number
        lines.append(line)
        size += len(line) + 1
    flush()
    return chunks


def _screen_sized(data: bytes) -> bool:
    """Whether an image is at most INDEX_OCR_PIXELS (read from its header, nothing decoded):
    screenshots and scans are, camera photos are not, and they rarely hold text worth a few
    seconds of OCR each while a search waits. A photo's text is still read when asked for
    (fs.read, image.text)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # Pillow raises many types for a damaged header
        return False
    return width * height <= INDEX_OCR_PIXELS


def labelled_chunks(text: str) -> list[Chunk]:
    """Chunks of a document's text, each starting with the "[page N]" line of the page (sheet,
    slide) it begins on, so a passage found by meaning says where it is."""
    chunks = []
    labels = Labels(text)
    for chunk in chunk_text(text):
        label = labels.at(chunk.start_line)
        if label and where(chunk.text, 1) is None:
            chunk = Chunk(chunk.start_line, chunk.end_line, f"[{label}]\n{chunk.text}")
        chunks.append(chunk)
    return chunks


def _decode(data: bytes) -> str | None:
    """The file's text, or None for a binary or non-UTF-8 file."""
    if b"\x00" in data:
        return None
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        return None


def _hidden(name: str) -> bool:
    """Names the index never looks into: dot-files and folders, tools' folders, temp files."""
    return name.startswith(".") or name in SKIP_DIRS or TEMP_MARK in name


def _under(path: str, scope: str) -> bool:
    """Whether a workspace-relative path lies in `scope` ("" is the whole workspace)."""
    return not scope or path == scope or path.startswith(scope + "/")


def _match_expression(query: str) -> str | None:
    """An FTS5 query matching any of the query's telling words (quoted, so no syntax leaks)."""
    words = [w for w in _WORD.findall(query.lower()) if len(w) > 1 and w not in _STOPWORDS]
    unique = list(dict.fromkeys(words))[:MAX_QUERY_WORDS]
    return " OR ".join(f'"{w}"' for w in unique) or None


def _cut(text: str) -> str:
    """A hit's text, cut to FILE_SEARCH_HIT_CHARS."""
    if len(text) <= FILE_SEARCH_HIT_CHARS:
        return text
    return text[: FILE_SEARCH_HIT_CHARS - 1] + "\u2026"


def index_file_name(root: Path) -> str:
    """The database file of the workspace at `root` (its real path, hashed)."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:32] + ".sqlite3"


@contextlib.contextmanager
def _db_errors(path: Path, what: str) -> Iterator[None]:
    """SQLite's exceptions, as an E_IO error naming the index and what failed."""
    try:
        yield
    except sqlite3.Error as exc:
        raise LlmosError(ErrorCode.E_IO, f"file index {path}: {what} failed: {exc}") from exc


def _connect(path: Path | None, root: str) -> sqlite3.Connection:
    """Open (creating, 0600) the index database of one workspace, checking it is that one's;
    with no path, a database in this process's memory only."""
    if path is not None:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    where = ":memory:" if path is None else path
    db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        # A cache: losing the last commit to a power cut costs a re-read, never consistency.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('root', ?)", (root,))
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', '0')")
        found = db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()[0]
    except BaseException:
        db.close()
        raise
    if found != root:
        db.close()
        raise LlmosError(ErrorCode.E_IO, f"file index {path} belongs to {found}, not {root}")
    return db


def _remove_db(path: Path) -> None:
    """Delete an index database with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _open_db(path: Path, root: str) -> sqlite3.Connection:
    """The index database, rebuilt empty when SQLite finds it damaged (it is only a cache)."""
    try:
        return _connect(path, root)
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) not in (SQLITE_CORRUPT, SQLITE_NOTADB):
            raise LlmosError(ErrorCode.E_IO, f"file index {path}: cannot open: {exc}") from exc
        log.warning("file index %s is damaged (%s); rebuilding it", path, exc)
    except OSError as exc:
        raise LlmosError(ErrorCode.E_IO, f"file index {path}: cannot open: {exc}") from exc
    _remove_db(path)
    try:
        return _connect(path, root)
    except (sqlite3.Error, OSError) as exc:
        raise LlmosError(ErrorCode.E_IO, f"file index {path}: cannot rebuild: {exc}") from exc


def _file_cap(name: str) -> int:
    """The largest file of this name that is indexed: a document (PDF, Office, image...) is
    read whole for its text, up to DOCUMENT_MAX_BYTES; any other file up to
    FILE_INDEX_MAX_FILE_BYTES."""
    if os.path.splitext(name)[1].lower() in SUFFIXES:
        return max(DOCUMENT_MAX_BYTES, FILE_INDEX_MAX_FILE_BYTES)
    return FILE_INDEX_MAX_FILE_BYTES


def _read_file(dir_fd: int, name: str) -> tuple[bytes, os.stat_result] | None:
    """A regular file's bytes and the stat they were read under, opened by name under its own
    folder's handle without following a link; None when it vanished, is unreadable, is not a
    regular file (a FIFO, a link swapped in) or has grown past its cap (`_file_cap`)."""
    cap = _file_cap(name)
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        parts: list[bytes] = []
        got = 0
        while got <= cap:
            part = os.read(fd, cap + 1 - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        if got > cap:
            return None
        return b"".join(parts), info
    except OSError:
        return None
    finally:
        os.close(fd)


def _walk(
    dir_fd: int, prefix: str, depth: int, scan: _Scan
) -> Generator[tuple[str, os.stat_result], None, None]:
    """(workspace path, lstat) of each regular file below `dir_fd`, sorted, skipping hidden
    folders and never following a link (each folder is opened under its parent's handle)."""
    try:
        with os.scandir(dir_fd) as found:
            entries = sorted(found, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if _hidden(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        rel = prefix + entry.name
        if rel in scan.hidden:
            continue
        if stat.S_ISREG(info.st_mode):
            yield rel, info
        elif stat.S_ISDIR(info.st_mode):
            if depth >= FILE_INDEX_MAX_DEPTH:
                note = f"folders nested deeper than {FILE_INDEX_MAX_DEPTH} were left out"
                if note not in scan.notes:
                    scan.notes.append(note)
                continue
            try:
                sub = open_dir_at(dir_fd, entry.name)
            except OSError:
                continue
            try:
                yield from _walk(sub, rel + "/", depth + 1, scan)
            finally:
                os.close(sub)


class FileIndex:
    """Chunks of a workspace's text files with their embeddings and words, searched by meaning.

    One instance per workspace; it does not own the workspace or the embedder (whose model is
    shared by every Embedder in the process). Thread-safe; several processes may share the
    database (SQLite's locking), each bringing it up to date before it searches.
    """

    def __init__(
        self,
        workspace: Workspace,
        embedder: Embedder,
        folder: Path,
        *,
        in_memory: bool = False,
        documents: Documents | None = None,
    ) -> None:
        self.workspace = workspace
        self.embedder = embedder
        self.documents = documents or Documents()
        """Reads PDFs, Office files and images' text for the index (with the cache fs.read
        shares when given)."""
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Chunks and vectors are the files' text: the folder is the owner's alone.
            os.chmod(folder, 0o700)
        except OSError as exc:
            raise LlmosError(ErrorCode.E_IO, f"file index folder {folder}: {exc}") from exc
        self.path = folder / index_file_name(workspace.root)
        self.in_memory = in_memory
        """Kept in this process's memory, never on disk (memory_encrypt: see `open`)."""
        if in_memory:
            try:
                _remove_db(self.path)  # an index written before encryption was turned on
                self._db = _connect(None, str(workspace.root))
            except (sqlite3.Error, OSError) as exc:
                raise LlmosError(ErrorCode.E_IO, f"file index in memory: {exc}") from exc
        else:
            self._db = _open_db(self.path, str(workspace.root))
        self._lock = threading.RLock()
        self._vectors: _Vectors | None = None
        # Vectors of files a deadline cut short, by (model, path, chunk text), for next time.
        self._spare: dict[tuple[str, str, str], bytes] = {}

    @classmethod
    def open(
        cls,
        settings: Settings,
        workspace: Workspace,
        embedder: Embedder | None = None,
        documents: Documents | None = None,
    ) -> FileIndex:
        """The index of `workspace` under LLMOS_HOME/files; the embedder is the one memory uses
        (`settings.memory_embedder`) unless one, already loaded perhaps, is given.

        With memory_encrypt the index is kept in memory only, and one left on disk is deleted:
        its chunks and words are copies of the files' text, and the word index (FTS5) cannot
        be encrypted and still match words and their stems. It is only a cache of files that
        are in the workspace anyway, so each process builds its own (within a search's time
        budget, as a first build is) instead of keeping a copy in LLMOS_HOME.
        """
        folder = settings.ensure_home() / FILES_DIR
        return cls(
            workspace,
            embedder or Embedder(settings.memory_embedder),
            folder,
            in_memory=settings.memory_encrypt,
            documents=documents,
        )

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()
            self._vectors = None

    def __enter__(self) -> FileIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, bumping the generation that cached vectors are keyed by."""
        with _db_errors(self.path, "writing"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def refresh(self, path: str = "", budget_s: float | None = None) -> ScanReport:
        """Bring the index of the folder (or file) `path` up to date: stat everything, re-read
        files whose (mtime, size) changed, embed new chunk texts, drop files that are gone.

        Changed files are read smallest first; with `budget_s`, embedding stops at the first
        batch past that many seconds, and the files not done wait for the next refresh (with
        the vectors made for them so far; files the index held are kept as they were
        meanwhile). Without it (a build in the background), all are done.
        """
        with self._lock:
            return self._refresh(path, budget_s)[0]

    def _refresh(self, path: str, budget_s: float | None) -> tuple[ScanReport, str]:
        """`refresh`, also returning the scanned folder's real workspace path."""
        started = time.monotonic()
        scan = _Scan(hidden=self.workspace.hidden)
        stale: list[tuple[str, os.stat_result]] = []
        with self.workspace.locate(path) as loc:
            scope = loc.rel
            info = loc.lstat()
            if info is None:
                raise LlmosError(ErrorCode.E_NOENT, f"{path} does not exist")
            known = self._known(scope)
            with _db_errors(self.path, "counting chunks"):
                row = self._db.execute("SELECT COALESCE(SUM(chunks), 0) FROM files").fetchone()
            outside = int(row[0]) - sum(k.chunks for k in known.values())
            scan.chunks = outside
            if stat.S_ISDIR(info.st_mode):
                try:
                    top = open_dir_at(loc.dir_fd, loc.name)
                except OSError as exc:
                    raise os_error(exc, path) from None
                try:
                    entries = _walk(top, f"{scope}/" if scope else "", 1, scan)
                    with contextlib.closing(entries):
                        for rel, found in entries:
                            if not self._look(rel, found, known, scan, stale):
                                break
                finally:
                    os.close(top)
            elif stat.S_ISREG(info.st_mode):
                self._look(scope, info, known, scan, stale)
            else:
                raise LlmosError(ErrorCode.E_INVAL, f"{path} is not a folder or a regular file")
        deadline = None if budget_s is None else started + budget_s
        self._update(stale, known, scan, deadline, scope)
        gone = [p for p in known if p not in scan.seen]
        if gone:
            with self._transaction() as db:
                self._delete(db, gone)
        if scan.waiting:
            scan.notes.append(
                f"{len(scan.waiting)} changed or new files wait for the next search"
                f" (each search indexes for up to {budget_s:.0f} s)"
            )
        report = ScanReport(
            files=scan.files,
            chunks=scan.chunks - outside,
            read=scan.read,
            embedded=scan.embedded,
            removed=len(gone),
            skipped=scan.skipped,
            waiting=len(scan.waiting),
            truncated=bool(scan.notes),
            note="; ".join(scan.notes),
        )
        return report, scope

    def _known(self, scope: str) -> dict[str, _Known]:
        """What the index holds about each file in `scope`."""
        with _db_errors(self.path, "reading"):
            rows = self._db.execute(
                "SELECT path, mtime_ns, size, sha256, model, text, chunks FROM files"
            ).fetchall()
        return {
            str(row[0]): _Known(
                int(row[1]), int(row[2]), str(row[3]), str(row[4]), bool(row[5]), int(row[6])
            )
            for row in rows
            if _under(str(row[0]), scope)
        }

    def _look(
        self,
        rel: str,
        info: os.stat_result,
        known: dict[str, _Known],
        scan: _Scan,
        stale: list[tuple[str, os.stat_result]],
    ) -> bool:
        """Keep a file the index holds unchanged, or note it to be read; False once the walk
        has met FILE_INDEX_MAX_FILES files and must stop."""
        if scan.seen_files >= FILE_INDEX_MAX_FILES:
            scan.notes.append(f"stopped after {FILE_INDEX_MAX_FILES} files")
            return False
        scan.seen_files += 1
        if info.st_size > FILE_INDEX_MAX_FILE_BYTES:
            scan.skipped += 1
            return True
        old = known.get(rel)
        if (
            old is not None
            and old.model == self.embedder.name
            and (old.mtime_ns, old.size) == (info.st_mtime_ns, info.st_size)
        ):
            if self._fits(scan, old.chunks):
                self._keep(scan, rel, old)
        else:
            stale.append((rel, info))
        return True

    def _update(
        self,
        stale: Sequence[tuple[str, os.stat_result]],
        known: dict[str, _Known],
        scan: _Scan,
        deadline: float | None,
        scope: str,
    ) -> None:
        """Read the changed and new files in `scope`, smallest first (many notes before one
        big log), and embed and commit them in groups, until the deadline."""
        pending: list[_Pending] = []
        waiting = 0
        for rel, _ in sorted(stale, key=lambda item: (item[1].st_size, item[0])):
            old = known.get(rel)
            if deadline is not None and time.monotonic() >= deadline:
                scan.waiting.add(rel)
                if old is not None and self._fits(scan, old.chunks):
                    self._keep(scan, rel, old)
                continue
            item = self._read(rel, old, scan)
            if item is None or not self._fits(scan, len(item.chunks)):
                continue
            scan.seen.add(rel)
            scan.chunks += len(item.chunks)
            scan.files += int(item.text)
            pending.append(item)
            waiting += len(item.chunks)
            if waiting >= EMBED_GROUP:
                self._commit(pending, scan, deadline)
                pending, waiting = [], 0
        if pending:
            self._commit(pending, scan, deadline)
        self._spare = {
            key: blob
            for key, blob in self._spare.items()
            if key[1] in scan.waiting or not _under(key[1], scope)
        }

    @staticmethod
    def _fits(scan: _Scan, chunks: int) -> bool:
        """Whether a file of this many chunks stays within FILE_INDEX_MAX_CHUNKS; files met
        earlier in the walk win, so the same files are kept scan after scan."""
        if scan.chunks + chunks <= FILE_INDEX_MAX_CHUNKS:
            return True
        note = f"files past {FILE_INDEX_MAX_CHUNKS} chunks were left out"
        if note not in scan.notes:
            scan.notes.append(note)
        scan.skipped += 1
        return False

    @staticmethod
    def _keep(scan: _Scan, rel: str, old: _Known) -> None:
        """Count a file the index already holds as it is."""
        scan.seen.add(rel)
        scan.chunks += old.chunks
        scan.files += int(old.text)
        scan.skipped += int(not old.text)

    def _read(self, rel: str, old: _Known | None, scan: _Scan) -> _Pending | None:
        """Read and chunk a new or changed file; None when it is left as the index has it (same
        bytes) or left out (unreadable, vanished, too big now).

        The file is found again from the workspace root, each folder opened without following
        a link out of the workspace and the file itself with O_NOFOLLOW, so a link swapped in
        since the walk is refused; this also runs the workspace's guard on the path.
        """
        model = self.embedder.name
        try:
            with self.workspace.locate(rel, follow=False) as loc:
                found = _read_file(loc.dir_fd, loc.name)
        except LlmosError:
            found = None
        if found is None:
            scan.skipped += 1
            return None
        data, info = found
        scan.read += 1
        digest = hashlib.sha256(data).hexdigest()
        mtime_ns = info.st_mtime_ns if time.time_ns() - info.st_mtime_ns >= RACY_NS else -1
        if old is not None and old.sha256 == digest and old.model == model:
            if self._fits(scan, old.chunks):
                with self._transaction() as db:
                    db.execute(
                        "UPDATE files SET mtime_ns = ?, size = ? WHERE path = ?",
                        (mtime_ns, info.st_size, rel),
                    )
                self._keep(scan, rel, old)
            return None
        kind = kind_of(rel, data[:DOCUMENT_SNIFF_BYTES])
        if kind is None:
            text = _decode(data)
            chunks = [] if text is None else chunk_text(text)
        else:
            text = self._document_text(data, kind, rel)
            chunks = [] if text is None else labelled_chunks(text)
        if text is None:
            scan.skipped += 1
        return _Pending(rel, mtime_ns, info.st_size, digest, text is not None, chunks, old)

    def _document_text(self, data: bytes, kind: str, rel: str) -> str | None:
        """A document's or image's text through the converter (cached per file version); None
        when it cannot be read (encrypted, corrupt): it is then tried again only once the file
        changes. The scan's deadline is checked before each file, so one conversion (at most
        DOCUMENT_TIMEOUT_S) may run past it."""
        if kind == "image" and not _screen_sized(data):
            return None
        try:
            return self.documents.read(data, kind, rel).text
        except LlmosError as exc:
            log.info("file index: %s left out: %s", rel, exc)
            return None

    def _commit(self, pending: Sequence[_Pending], scan: _Scan, deadline: float | None) -> None:
        """Embed the chunk texts these files' old chunks did not have, then replace the files'
        chunks in one transaction.

        Past the deadline no further batch is embedded (one always is, so every refresh makes
        progress); a file whose chunks are not all embedded then waits, its vectors so far
        kept in memory for the next refresh, and the index keeps what it held of it.
        """
        model = self.embedder.name
        vectors: dict[tuple[str, str], bytes] = {}
        with _db_errors(self.path, "reading old chunks"):
            for item in pending:
                if item.old is not None and item.old.model == model:
                    for text, blob in self._db.execute(
                        "SELECT text, vector FROM chunks WHERE path = ?", (item.path,)
                    ):
                        vectors[(item.path, str(text))] = bytes(blob)
        for (made_by, path, text), blob in self._spare.items():
            if made_by == model:
                vectors[(path, text)] = blob
        wanted = list(
            dict.fromkeys(
                (item.path, chunk.text)
                for item in pending
                for chunk in item.chunks
                if (item.path, chunk.text) not in vectors
            )
        )
        import numpy as np

        for at in range(0, len(wanted), EMBED_GROUP):
            if at and deadline is not None and time.monotonic() >= deadline:
                break
            batch = wanted[at : at + EMBED_GROUP]
            made = self.embedder.embed([f"{path}\n{text}" for path, text in batch])
            for key, vector in zip(batch, made, strict=True):
                vectors[key] = np.asarray(vector, dtype=np.float32).tobytes()
            scan.embedded += len(batch)
        done: list[_Pending] = []
        for item in pending:
            if all((item.path, chunk.text) in vectors for chunk in item.chunks):
                done.append(item)
            else:
                self._wait(scan, item, vectors, model)
        with self._transaction() as db:
            self._delete(db, [item.path for item in done])
            for item in done:
                db.execute(
                    "INSERT INTO files (path, mtime_ns, size, sha256, model, text, chunks)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.path,
                        item.mtime_ns,
                        item.size,
                        item.sha256,
                        model,
                        int(item.text),
                        len(item.chunks),
                    ),
                )
                for chunk in item.chunks:
                    cursor = db.execute(
                        "INSERT INTO chunks (path, start_line, end_line, text, vector)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            item.path,
                            chunk.start_line,
                            chunk.end_line,
                            chunk.text,
                            vectors[(item.path, chunk.text)],
                        ),
                    )
                    db.execute(
                        "INSERT INTO chunk_words (rowid, path, text) VALUES (?, ?, ?)",
                        (cursor.lastrowid, item.path, chunk.text),
                    )

    def _wait(
        self, scan: _Scan, item: _Pending, vectors: dict[tuple[str, str], bytes], model: str
    ) -> None:
        """Leave a file the deadline cut short for the next refresh, keeping its vectors."""
        for chunk in item.chunks:
            blob = vectors.get((item.path, chunk.text))
            if blob is not None:
                self._spare[(model, item.path, chunk.text)] = blob
        scan.waiting.add(item.path)
        scan.chunks -= len(item.chunks)
        scan.files -= int(item.text)
        scan.seen.discard(item.path)
        if item.old is not None:
            self._keep(scan, item.path, item.old)

    @staticmethod
    def _delete(db: sqlite3.Connection, paths: Sequence[str]) -> None:
        """Remove files, their chunks and their words (inside the caller's transaction)."""
        for path in paths:
            db.execute(
                "DELETE FROM chunk_words WHERE rowid IN (SELECT id FROM chunks WHERE path = ?)",
                (path,),
            )
            db.execute("DELETE FROM chunks WHERE path = ?", (path,))
            db.execute("DELETE FROM files WHERE path = ?", (path,))

    def _matrix(self) -> _Vectors:
        """Every chunk's vector made by the current model, read again only when the index
        changed since (any process's commit bumps its generation)."""
        import numpy as np

        with _db_errors(self.path, "reading vectors"):
            self._db.execute("BEGIN")
            try:
                row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'")
                generation = str(row.fetchone()[0])
                if self._vectors is not None and self._vectors.generation == generation:
                    return self._vectors
                rows = self._db.execute(
                    "SELECT c.id, c.path, c.vector FROM chunks c JOIN files f USING (path)"
                    " WHERE f.model = ? ORDER BY c.id",
                    (self.embedder.name,),
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        width = len(rows[0][2]) if rows else 0
        kept = [row for row in rows if len(row[2]) == width]
        matrix = np.frombuffer(b"".join(bytes(row[2]) for row in kept), dtype=np.float32)
        ids = [int(row[0]) for row in kept]
        self._vectors = _Vectors(
            generation=generation,
            ids=ids,
            paths=[str(row[1]) for row in kept],
            matrix=matrix.reshape(len(kept), width // 4),
            row_of={chunk_id: i for i, chunk_id in enumerate(ids)},
        )
        return self._vectors

    def _word_ranks(self, query: str, scope: str) -> list[int]:
        """Chunk ids ranked by bm25 on the query's telling words, best first."""
        expression = _match_expression(query)
        if expression is None:
            return []
        with _db_errors(self.path, "word search"):
            rows = self._db.execute(
                "SELECT rowid, path FROM chunk_words WHERE chunk_words MATCH ?"
                " ORDER BY bm25(chunk_words, 0.5, 1.0) LIMIT ?",
                (expression, CANDIDATES * 4 if scope else CANDIDATES),
            ).fetchall()
        return [int(row[0]) for row in rows if _under(str(row[1]), scope)][:CANDIDATES]

    def search(
        self,
        query: str,
        k: int = 10,
        path: str = "",
        budget_s: float | None = FILE_SEARCH_BUILD_SECONDS,
    ) -> FileSearchResult:
        """The `k` chunks of the files under `path` (the whole workspace by default) that best
        answer `query`, best first, after bringing the index of `path` up to date for at most
        `budget_s` seconds (see `refresh`)."""
        if not query.strip():
            raise LlmosError(ErrorCode.E_INVAL, "the query is empty")
        if not 1 <= k <= FILE_SEARCH_MAX_K:
            raise LlmosError(ErrorCode.E_INVAL, f"k must be from 1 to {FILE_SEARCH_MAX_K}")
        import numpy as np

        with self._lock:
            scan, scope = self._refresh(path, budget_s)
            vectors = self._matrix()
            if not vectors.ids:
                return FileSearchResult(query=query, hits=[], scan=scan)
            wanted = np.asarray(self.embedder.embed_one(query), dtype=np.float32)
            if wanted.shape[0] != vectors.matrix.shape[1]:
                raise LlmosError(ErrorCode.E_BACKEND, "the query's vector does not fit the index")
            similarity = vectors.matrix @ wanted
            rows = np.arange(len(vectors.ids))
            if scope:
                inside = np.fromiter((_under(p, scope) for p in vectors.paths), dtype=bool)
                rows = rows[inside]
            best = rows[np.argsort(-similarity[rows], kind="stable")[:CANDIDATES]]
            fused: dict[int, float] = {}
            for rank, row in enumerate(best, start=1):
                fused[vectors.ids[int(row)]] = 1.0 / (RRF_K + rank)
            for rank, chunk_id in enumerate(self._word_ranks(query, scope), start=1):
                if chunk_id in vectors.row_of:
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            cosine = {c: float(similarity[vectors.row_of[c]]) for c in fused}
            chosen = sorted(fused, key=lambda c: (-fused[c], -cosine[c], c))[:k]
            hits = self._hits(chosen, fused, cosine)
        return FileSearchResult(query=query, hits=hits, scan=scan)

    def _hits(
        self, chosen: Sequence[int], fused: dict[int, float], similarity: dict[int, float]
    ) -> list[FileHit]:
        """The chosen chunks as hits, in the order chosen."""
        if not chosen:
            return []
        marks = ",".join("?" * len(chosen))
        with _db_errors(self.path, "reading hits"):
            rows = self._db.execute(
                f"SELECT id, path, start_line, end_line, text FROM chunks WHERE id IN ({marks})",
                list(chosen),
            ).fetchall()
        found = {int(row[0]): row for row in rows}
        return [
            FileHit(
                path=str(found[c][1]),
                start_line=int(found[c][2]),
                end_line=int(found[c][3]),
                text=_cut(str(found[c][4])),
                score=round(fused[c], 6),
                similarity=round(similarity[c], 4),
            )
            for c in chosen
            if c in found
        ]
