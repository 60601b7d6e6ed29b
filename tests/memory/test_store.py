"""The SQLite system of record: durable writes, one opener at a time, private files, encryption."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.memory.store import DB_FILE, MemoryStore, NewRecord


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_add_get_and_reopen(store: MemoryStore, llmos_home: Path) -> None:
    fact = store.add("archival", "My cat is called Miso", ["pets"], {"process": "shell"})
    page = store.add("recall", "user: hello\nkernel: hi", meta={"session": "s1", "turn_start": 3})
    assert (fact.id, page.id) == ("a1", "r2")
    assert store.get("a1") == fact
    assert store.get("nope") is None
    assert store.count() == 2 and store.count("archival") == 1 and store.count("recall") == 1
    store.close()
    with MemoryStore(llmos_home / "memory") as again:
        assert again.get("a1") == fact
        assert again.get("r2") == page
        assert again.get("r2").meta == {"session": "s1", "turn_start": 3}  # type: ignore[union-attr]
        assert again.add("archival", "next").id == "a3"


def test_ids_are_never_reused(store: MemoryStore, llmos_home: Path) -> None:
    store.add("archival", "one")
    store.add("archival", "two")
    store.delete(["a2"])
    store.close()
    with MemoryStore(llmos_home / "memory") as again:
        assert again.add("archival", "three").id == "a3"


def test_add_many_is_one_transaction(store: MemoryStore) -> None:
    items = [NewRecord(text=f"turn {i}", meta={"turn_start": i}) for i in range(5)]
    records = store.add_many("recall", items)
    assert [r.id for r in records] == ["r1", "r2", "r3", "r4", "r5"]
    with pytest.raises(LlmosError) as err:
        store.add_many("bogus", items)  # type: ignore[arg-type]
    assert err.value.code == ErrorCode.E_INVAL
    assert store.count() == 5


def test_failed_transaction_stores_nothing(store: MemoryStore) -> None:
    good = NewRecord(text="fine")
    bad = NewRecord(text="bad", meta={"x": object()})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        store.add_many("archival", [good, bad])
    assert store.count() == 0
    assert store.add("archival", "after").id == "a1"


def test_delete_returns_what_went(store: MemoryStore) -> None:
    a = store.add("archival", "a")
    store.add("archival", "b")
    gone = store.delete(["a1", "a1", "zzz"])
    assert gone == [a]
    assert [r.text for r in store.all()] == ["b"]
    assert store.delete(["a1"]) == []


def test_get_many_keeps_order_and_skips_unknown(store: MemoryStore) -> None:
    for text in "abc":
        store.add("archival", text)
    assert [r.text for r in store.get_many(["a3", "x", "a1"])] == ["c", "a"]
    assert store.recent_ids("archival", 2) == ["a3", "a2"]


def test_vectors_round_trip_and_batches(store: MemoryStore) -> None:
    for i in range(7):
        vector = [float(i), 0.5, -1.0] if i % 2 == 0 else None
        store.add("archival", f"t{i}", vector=vector, model="m" if vector else None)
    items = list(store.iter_vectors("archival", batch=3))
    assert [i.record.text for i in items] == [f"t{i}" for i in range(7)]
    assert items[2].vector == [2.0, 0.5, -1.0] and items[2].model == "m"
    assert items[1].vector is None and items[1].model is None
    store.set_vectors({"a2": [9.0, 9.0, 9.0]}, "other")
    assert store.vector("a2") == [9.0, 9.0, 9.0]
    assert store.vector("zzz") is None
    picked = store.get_vectors(["a3", "nope", "a2"])
    assert [(p.record.id, p.vector, p.model) for p in picked] == [
        ("a3", [2.0, 0.5, -1.0], "m"),
        ("a2", [9.0, 9.0, 9.0], "other"),
    ]
    assert store.ids("archival") == [f"a{i}" for i in range(1, 8)]
    assert store.ids("recall") == []


def test_wal_and_full_sync(store: MemoryStore, llmos_home: Path) -> None:
    store.add("archival", "x")
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_files_are_private(store: MemoryStore, llmos_home: Path) -> None:
    store.add("archival", "secret")
    folder = llmos_home / "memory"
    assert _mode(folder) == 0o700
    for name in (DB_FILE, DB_FILE + "-wal", "lock"):
        assert _mode(folder / name) == 0o600, name


def test_existing_folder_is_made_private(llmos_home: Path) -> None:
    folder = llmos_home / "memory"
    folder.mkdir(parents=True, mode=0o755)
    os.chmod(folder, 0o755)
    with MemoryStore(folder):
        assert _mode(folder) == 0o700


def test_second_opener_fails_fast(store: MemoryStore, llmos_home: Path) -> None:
    start = time.monotonic()
    with pytest.raises(LlmosError) as err:
        MemoryStore(llmos_home / "memory")
    assert time.monotonic() - start < 1.0
    assert err.value.code == ErrorCode.E_IO
    assert "in use by another llmos process" in err.value.message
    assert f"pid {os.getpid()}" in err.value.message


def test_second_process_fails_fast_and_lock_dies_with_holder(llmos_home: Path) -> None:
    folder = llmos_home / "memory"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from llmos.memory.store import "
            "MemoryStore; s = MemoryStore(Path(sys.argv[1])); print('ready', flush=True); "
            "time.sleep(60)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(LlmosError) as err:
            MemoryStore(folder)
        assert f"pid {holder.pid}" in err.value.message
    finally:
        holder.kill()
        holder.wait()
    with MemoryStore(folder) as mine:  # the kernel dropped the dead holder's flock
        assert mine.count() == 0


def test_unreadable_database_is_a_clear_error(llmos_home: Path) -> None:
    folder = llmos_home / "memory"
    folder.mkdir(parents=True)
    (folder / DB_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LlmosError) as err:
        MemoryStore(folder)
    assert err.value.code == ErrorCode.E_IO
    with pytest.raises(LlmosError):  # the lock was released on the failure: same answer again
        MemoryStore(folder)


def _raw_rows(folder: Path) -> list[tuple[bytes, bytes | None]]:
    con = sqlite3.connect(folder / DB_FILE)
    try:
        return con.execute("SELECT text, vector FROM records ORDER BY seq").fetchall()
    finally:
        con.close()


def test_encryption_at_rest(llmos_home: Path) -> None:
    folder, key = llmos_home / "memory", llmos_home / "keys" / "memory.key"
    with MemoryStore(folder, encrypt=True, key_path=key) as s:
        s.add("archival", "the vault code is 4417", vector=[0.25, 0.5], model="m")
        s.add("archival", "second secret")
    assert _mode(key) == 0o600
    rows = _raw_rows(folder)
    assert all(b"vault" not in text and b"secret" not in text for text, _ in rows)
    assert b"vault code" not in (folder / DB_FILE).read_bytes()  # closed: the WAL is merged
    with MemoryStore(folder, key_path=key) as reader:  # reading needs no encrypt flag
        assert reader.get("a1").text == "the vault code is 4417"  # type: ignore[union-attr]
        assert reader.vector("a1") == [0.25, 0.5]
        reader.add("archival", "plain now")
    assert _raw_rows(folder)[2][0] == b"plain now"


def test_ciphertext_is_bound_to_its_record(llmos_home: Path) -> None:
    folder, key = llmos_home / "memory", llmos_home / "keys" / "memory.key"
    with MemoryStore(folder, encrypt=True, key_path=key) as s:
        s.add("archival", "first")
        s.add("archival", "second")
    con = sqlite3.connect(folder / DB_FILE)
    first = con.execute("SELECT text FROM records WHERE id = 'a1'").fetchone()[0]
    con.execute("UPDATE records SET text = ? WHERE id = 'a2'", (first,))
    con.commit()
    con.close()
    with MemoryStore(folder, key_path=key) as s:
        assert s.get("a1").text == "first"  # type: ignore[union-attr]
        with pytest.raises(LlmosError) as err:
            s.get("a2")
        assert err.value.code == ErrorCode.E_IO
        assert "integrity" in err.value.message


def test_encrypted_records_without_the_key(llmos_home: Path) -> None:
    folder, key = llmos_home / "memory", llmos_home / "keys" / "memory.key"
    with MemoryStore(folder, encrypt=True, key_path=key) as s:
        s.add("archival", "locked")
    key.unlink()
    with MemoryStore(folder, key_path=key) as s:
        with pytest.raises(LlmosError) as err:
            s.get("a1")
        assert "key" in err.value.message and "missing" in err.value.message
        assert not key.exists()  # reading never invents a new key


def test_meta_values(store: MemoryStore) -> None:
    assert len(store.store_id) == 12
    assert store.get_meta("missing") is None
    store.set_meta("index_state", "clean")
    store.set_meta("index_state", "dirty")
    assert store.get_meta("index_state") == "dirty"


def test_counts_stay_exact(store: MemoryStore, llmos_home: Path) -> None:
    store.add_many("archival", [NewRecord(text=str(i)) for i in range(700)])
    store.add("recall", "page")
    assert (store.count("archival"), store.count("recall"), store.count()) == (700, 1, 701)
    gone = store.delete([f"a{i}" for i in range(1, 601)])  # more ids than one SQL statement takes
    assert len(gone) == 600 and store.count("archival") == 100
    assert len(store.get_many([f"a{i}" for i in range(1, 702)])) == 100
    store.close()
    with MemoryStore(llmos_home / "memory") as again:
        assert (again.count("archival"), again.count("recall")) == (100, 1)
