"""The memory system of record: SQLite (WAL, synchronous FULL) under LLMOS_HOME/memory.

Every fact and every paged-out turn is committed here before the call that stored it returns,
so it survives `kill -9`; the Chroma index is rebuilt from this store whenever it is in doubt.
One process at a time holds the store (an flock), and a second opener fails at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from llmos.errors import ErrorCode, LlmosError
from llmos.memory.cipher import RecordCipher
from llmos.syscalls.services import Collection, MetaValue, Record

COLLECTIONS: tuple[Collection, ...] = get_args(Collection)
ID_PREFIX: dict[str, str] = {"archival": "a", "recall": "r"}

DB_FILE = "store.sqlite3"
MAX_SQL_VARIABLES = 500
LOCK_FILE = "lock"
PLAIN, TEXT_SEALED, ALL_SEALED = 0, 1, 2
"""A record's `encrypted` column: in clear; its text sealed (what an older llmos wrote, tags and
metadata in clear); text, tags and metadata sealed together, only the session id left in clear
(what a search within one session selects by; it is a saved session's file name anyway)."""
SEAL_BATCH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    collection TEXT NOT NULL,
    text BLOB NOT NULL,
    encrypted INTEGER NOT NULL,
    tags TEXT NOT NULL,
    meta TEXT NOT NULL,
    vector BLOB,
    model TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_collection ON records (collection, seq);
CREATE INDEX IF NOT EXISTS records_by_session
    ON records (collection, CAST(json_extract(meta, '$.session') AS TEXT));
"""
_COLUMNS = "id, collection, text, encrypted, tags, meta, created"
# The expression `records_by_session` indexes: a query must spell it the same way to use it.
_SESSION = "CAST(json_extract(meta, '$.session') AS TEXT)"


@dataclass(frozen=True)
class NewRecord:
    """What `MemoryStore.add_many` takes: the text, its labels and (optionally) its embedding."""

    text: str
    tags: Sequence[str] = ()
    meta: Mapping[str, MetaValue] | None = None
    vector: Sequence[float] | None = None
    model: str | None = None


@dataclass(frozen=True)
class StoredVector:
    """A record with the embedding stored beside it (None when it was stored without one)."""

    record: Record
    vector: list[float] | None
    model: str | None


class StoreLock:
    """An exclusive, non-blocking flock on the store's lock file (released by the kernel even
    when the holder is killed), so a second opener fails fast instead of hanging."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise E_IO naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LlmosError(
                ErrorCode.E_IO,
                f"the memory store {self.path.parent} is in use by another llmos process "
                f"(pid {holder}); close that one, or use another LLMOS_HOME",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MemoryStore:
    """Records in SQLite, one writer (this process), each write committed before it returns."""

    def __init__(
        self, folder: Path, *, encrypt: bool = False, key_path: Path | None = None
    ) -> None:
        self.folder = folder
        self.encrypt = encrypt
        self.key_path = key_path
        self._lock = threading.RLock()
        self._cipher: RecordCipher | None = None
        self._closed = False
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Embeddings and texts leak meaning: the folder is the owner's alone, even if it existed.
        os.chmod(folder, 0o700)
        self._flock = StoreLock(folder / LOCK_FILE)
        self._flock.acquire()
        try:
            self._db = self._connect(folder / DB_FILE)
            if encrypt:
                self._cipher = self._load_cipher(create=not self._has_sealed())
                # Deleted and rewritten rows are zeroed, not left in free pages.
                self._db.execute("PRAGMA secure_delete=ON")
            self.store_id = self._init_meta()
            self._next_seq = self._last_seq() + 1
            # Counted once here, then kept in step by add/delete: this process is the only
            # writer (the flock), and a search asks for the count every time.
            self._counts = dict.fromkeys(COLLECTIONS, 0)
            for collection, n in self._db.execute(
                "SELECT collection, COUNT(*) FROM records GROUP BY collection"
            ):
                self._counts[collection] = int(n)
            self.sealed_on_open = self._seal_existing() if encrypt else 0
            """How many records stored in clear (or only partly sealed) opening sealed."""
        except BaseException:
            self._flock.release()
            raise

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # Create the file 0600 first: SQLite gives its -wal and -shm files the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LlmosError(ErrorCode.E_IO, f"memory store {path}: cannot use WAL ({mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise LlmosError(ErrorCode.E_IO, f"memory store {path} is unreadable: {exc}") from exc
        return db

    def _init_meta(self) -> str:
        found = self.get_meta("store_id")
        if found is not None:
            return found
        store_id = secrets.token_hex(6)
        self.set_meta("store_id", store_id)
        return store_id

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        return int(row[0]) if row else 0

    def _has_sealed(self) -> bool:
        row = self._db.execute("SELECT 1 FROM records WHERE encrypted != 0 LIMIT 1").fetchone()
        return row is not None

    def _load_cipher(self, *, create: bool) -> RecordCipher:
        """The cipher under the key file; a key is made only when nothing is sealed yet (a
        store whose key was lost must not go on under a new one)."""
        if self.key_path is None:
            raise LlmosError(ErrorCode.E_IO, "memory encryption needs a key file; none was given")
        if not create:
            return RecordCipher.existing(self.key_path, "memory")
        return RecordCipher.from_key_file(self.key_path)

    def _seal_existing(self) -> int:
        """Seal every record stored in clear or only partly sealed (turning encryption on for
        an existing store), then compact the file and empty the WAL, so that no copy of the old
        text is left in free pages or log frames. Returns how many records it sealed."""
        sealed = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS}, vector FROM records WHERE encrypted != ? LIMIT ?",
                    (ALL_SEALED, SEAL_BATCH),
                ).fetchall()
            if not rows:
                break
            with self._transaction() as db:
                for row in rows:
                    record = self._record(row[:7])
                    vector = row[7]
                    if isinstance(vector, bytes) and not row[3]:
                        vector = self._seal(record.id, "vector", vector, True)
                    text, tags, meta = self._sealed_columns(record)
                    db.execute(
                        "UPDATE records SET text = ?, encrypted = ?, tags = ?, meta = ?,"
                        " vector = ? WHERE id = ?",
                        (text, ALL_SEALED, tags, meta, vector, record.id),
                    )
            sealed += len(rows)
        if sealed:
            with self._lock:
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sealed

    def _sealed_columns(self, record: Record) -> tuple[bytes, str, str]:
        """The text, tags and meta columns of a record sealed whole (ALL_SEALED)."""
        private = {"text": record.text, "tags": list(record.tags), "meta": dict(record.meta)}
        blob = self._cipher_now().seal(
            record.id, "record", json.dumps(private, ensure_ascii=False).encode()
        )
        session = record.meta.get("session")
        public = {} if session is None else {"session": session}
        return blob, "[]", json.dumps(public)

    def index_tag(self, tag: str) -> str:
        """What the index files `tag` under: the tag itself, or with encryption on a keyed
        digest of it (prefixed '~', which no tag holds), so the index never holds a tag."""
        if not self.encrypt:
            return tag
        return "~" + self._cipher_now().digest("tag", tag)

    def _cipher_now(self) -> RecordCipher:
        """The cipher, loading an existing key when an encrypted record is first met."""
        if self._cipher is None:
            self._cipher = self._load_cipher(create=False)
        return self._cipher

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the thread lock; ROLLBACK on any failure."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        """A value from the store's own key/value table (store id, index state...)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set (and commit) one key/value entry."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add(
        self,
        collection: Collection,
        text: str,
        tags: Sequence[str] = (),
        meta: Mapping[str, MetaValue] | None = None,
        *,
        vector: Sequence[float] | None = None,
        model: str | None = None,
    ) -> Record:
        """Store one record and commit it (durable when this returns)."""
        item = NewRecord(text=text, tags=tags, meta=meta, vector=vector, model=model)
        return self.add_many(collection, [item])[0]

    def add_many(self, collection: Collection, items: Sequence[NewRecord]) -> list[Record]:
        """Store several records in one transaction: all of them are durable, or none."""
        if collection not in COLLECTIONS:
            raise LlmosError(ErrorCode.E_INVAL, f"unknown memory collection {collection!r}")
        records: list[Record] = []
        with self._lock:
            with self._transaction() as db:
                seq = self._next_seq
                for item in items:
                    record_id = f"{ID_PREFIX[collection]}{seq}"
                    record = Record(
                        id=record_id,
                        collection=collection,
                        text=item.text,
                        tags=tuple(item.tags),
                        meta=dict(item.meta or {}),
                        created=time.time(),
                    )
                    if self.encrypt:
                        text, tags, meta = self._sealed_columns(record)
                    else:
                        text = item.text.encode()
                        tags = json.dumps(list(record.tags))
                        meta = json.dumps(record.meta, sort_keys=True)
                    db.execute(
                        "INSERT INTO records (seq, id, collection, text, encrypted, tags, meta,"
                        " vector, model, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            seq,
                            record_id,
                            collection,
                            text,
                            ALL_SEALED if self.encrypt else PLAIN,
                            tags,
                            meta,
                            None
                            if item.vector is None
                            else self._seal_vector(record_id, item.vector, self.encrypt),
                            item.model,
                            record.created,
                        ),
                    )
                    records.append(record)
                    seq += 1
                self._next_seq = seq
            self._counts[collection] += len(records)
        return records

    def _seal(self, record_id: str, purpose: str, data: bytes, sealed: bool) -> bytes:
        return self._cipher_now().seal(record_id, purpose, data) if sealed else data

    def _seal_vector(self, record_id: str, vector: Sequence[float], sealed: bool) -> bytes:
        return self._seal(record_id, "vector", array("f", vector).tobytes(), sealed)

    def _record(self, row: Sequence[object]) -> Record:
        record_id, collection, blob, encrypted, tags, meta, created = row
        assert isinstance(record_id, str) and isinstance(blob, bytes)
        if encrypted == ALL_SEALED:
            private = json.loads(self._cipher_now().open(record_id, "record", blob))
            text, tags, meta = private["text"], private["tags"], private["meta"]
        else:
            if encrypted:
                blob = self._cipher_now().open(record_id, "text", blob)
            text, tags, meta = blob.decode(), json.loads(str(tags)), json.loads(str(meta))
        return Record(
            id=record_id,
            collection=collection,  # type: ignore[arg-type]
            text=text,
            tags=tuple(tags),
            meta=meta,
            created=float(created),  # type: ignore[arg-type]
        )

    def _select_ids(self, columns: str, ids: Sequence[str]) -> list[Sequence[object]]:
        """Rows of `columns` for these ids, queried in chunks SQLite's variable limit allows."""
        rows: list[Sequence[object]] = []
        with self._lock:
            for start in range(0, len(ids), MAX_SQL_VARIABLES):
                chunk = list(ids[start : start + MAX_SQL_VARIABLES])
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self._db.execute(
                        f"SELECT {columns} FROM records WHERE id IN ({marks})", chunk
                    ).fetchall()
                )
        return rows

    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None."""
        found = self.get_many([record_id])
        return found[0] if found else None

    def get_many(self, ids: Sequence[str]) -> list[Record]:
        """The records with these ids, in the order asked, leaving out ids not stored."""
        rows = self._select_ids(_COLUMNS, ids)
        by_id = {str(row[0]): self._record(row) for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def delete(self, ids: Iterable[str]) -> list[Record]:
        """Delete records (committed when this returns) and return the ones that existed."""
        wanted = list(dict.fromkeys(ids))
        with self._lock:
            gone = self.get_many(wanted)
            with self._transaction() as db:
                db.executemany("DELETE FROM records WHERE id = ?", [(r.id,) for r in gone])
            for record in gone:
                self._counts[record.collection] -= 1
        return gone

    def update_meta(self, record_id: str, changes: Mapping[str, MetaValue]) -> Record | None:
        """Merge `changes` into one record's meta (sealed again when memory is encrypted),
        committed when this returns; the record as it now is, or None when there is none. Its
        text, tags and vector are left as they were."""
        with self._lock:
            record = self.get(record_id)
            if record is None:
                return None
            record = Record(
                id=record.id,
                collection=record.collection,
                text=record.text,
                tags=record.tags,
                meta={**record.meta, **changes},
                created=record.created,
            )
            (sealed,) = self._select_ids("encrypted", [record_id])[0]
            with self._transaction() as db:
                if self.encrypt or sealed == ALL_SEALED:
                    text, tags, meta = self._sealed_columns(record)
                    db.execute(
                        "UPDATE records SET text = ?, encrypted = ?, tags = ?, meta = ?"
                        " WHERE id = ?",
                        (text, ALL_SEALED, tags, meta, record_id),
                    )
                else:
                    db.execute(
                        "UPDATE records SET meta = ? WHERE id = ?",
                        (json.dumps(record.meta, sort_keys=True), record_id),
                    )
        return record

    def all(self, collection: Collection | None = None) -> list[Record]:
        """Every record (of one collection), oldest first."""
        return [item.record for item in self.iter_vectors(collection, with_vectors=False)]

    def count(self, collection: Collection | None = None) -> int:
        """How many records there are (in one collection)."""
        with self._lock:
            return sum(self._counts.values()) if collection is None else self._counts[collection]

    def ids(self, collection: Collection) -> list[str]:
        """Every id of a collection, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM records WHERE collection = ? ORDER BY seq", (collection,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def recent_ids(self, collection: Collection, n: int) -> list[str]:
        """The ids of the newest `n` records of a collection, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM records WHERE collection = ? ORDER BY seq DESC LIMIT ?",
                (collection, n),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def iter_vectors(
        self, collection: Collection | None = None, *, batch: int = 512, with_vectors: bool = True
    ) -> Iterator[StoredVector]:
        """Every record with its stored embedding, oldest first, read in batches (for reindex)."""
        last = 0
        where = "" if collection is None else "AND collection = ?"
        args: tuple[object, ...] = () if collection is None else (collection,)
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT seq, {_COLUMNS}, vector, model FROM records"
                    f" WHERE seq > ? {where} ORDER BY seq LIMIT ?",
                    (last, *args, batch),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._stored_vector(row[1:], with_vectors)
            last = int(rows[-1][0])

    def _vector(self, record_id: str, blob: bytes | None, sealed: bool) -> list[float] | None:
        if blob is None:
            return None
        if sealed:
            blob = self._cipher_now().open(record_id, "vector", blob)
        values = array("f")
        values.frombytes(blob)
        return values.tolist()

    def set_vectors(self, vectors: Mapping[str, Sequence[float]], model: str) -> None:
        """Replace the stored embeddings of some records (after re-embedding with `model`)."""
        with self._transaction() as db:
            for record_id, vector in vectors.items():
                row = db.execute(
                    "SELECT encrypted FROM records WHERE id = ?", (record_id,)
                ).fetchone()
                if row is not None:
                    blob = self._seal_vector(record_id, vector, bool(row[0]))
                    db.execute(
                        "UPDATE records SET vector = ?, model = ? WHERE id = ?",
                        (blob, model, record_id),
                    )

    def get_vectors(self, ids: Sequence[str]) -> list[StoredVector]:
        """Records with their stored embeddings, in the order asked (unknown ids left out)."""
        rows = self._select_ids(f"{_COLUMNS}, vector, model", ids)
        found = {item.record.id: item for item in map(self._stored_vector, rows)}
        return [found[i] for i in ids if i in found]

    def session_ids(self, collection: Collection, session: str) -> list[str]:
        """The ids of one session's records, oldest first (embedded yet or not)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM records WHERE collection = ? AND {_SESSION} = ? ORDER BY seq",
                (collection, session),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def session_vectors(
        self, collection: Collection, session: str, model: str
    ) -> tuple[list[str], list[bytes]]:
        """The ids and embeddings (float32 bytes, opened) of one session's records that have a
        vector made by `model`, oldest first: what a search within the session ranks."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, vector, encrypted FROM records WHERE collection = ? AND {_SESSION} = ?"
                " AND model = ? AND vector IS NOT NULL ORDER BY seq",
                (collection, session, model),
            ).fetchall()
        ids = [str(row[0]) for row in rows]
        blobs = [
            self._cipher_now().open(i, "vector", row[1]) if row[2] else row[1]
            for i, row in zip(ids, rows, strict=True)
        ]
        return ids, blobs

    def _stored_vector(self, row: Sequence[object], with_vector: bool = True) -> StoredVector:
        """A row of `_COLUMNS, vector, model` as a record with its (opened) embedding."""
        record = self._record(row[:7])
        blob, model = row[7], row[8]
        if not with_vector or not isinstance(blob, bytes):
            return StoredVector(record, None, None)
        vector = self._vector(record.id, blob, bool(row[3]))
        return StoredVector(record, vector, None if model is None else str(model))

    def vector(self, record_id: str) -> list[float] | None:
        """The stored embedding of one record (None when absent)."""
        with self._lock:
            row = self._db.execute(
                "SELECT vector, encrypted FROM records WHERE id = ?", (record_id,)
            ).fetchone()
        return None if row is None else self._vector(record_id, row[0], bool(row[1]))

    @property
    def closed(self) -> bool:
        """True once `close` has run."""
        return self._closed

    def close(self) -> None:
        """Close the database and release the lock (idempotent)."""
        with self._lock:
            self._closed = True
            self._db.close()
            self._flock.release()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
