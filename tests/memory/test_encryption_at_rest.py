"""Encryption at rest covers everything memory writes: with memory_encrypt on, no secret word of
a fact, a tag, a paged-out conversation or a saved session is in any file under LLMOS_HOME
(SQLite, its WAL, Chroma's folder, sessions, the audit), while search, recall and resume still
give the plaintext back; with it off, nothing changes; an existing plain store is sealed."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.loop import Conversation, Kernel
from llmos.memory.embedder import Embedder
from llmos.memory.files import FileIndex
from llmos.memory.memory import Memory
from llmos.memory.store import DB_FILE, MemoryStore
from llmos.pager import SessionFile, new_conversation, resume_conversation
from llmos.security.workspace import Workspace
from llmos.syscalls.context import Process
from llmos.system import System
from llmos.testing import ScriptedBackend

CONTEXT = 3800
"""As in test_pager: room for about 700 tokens of conversation, so turns page out soon."""
FACT = "my bank PIN is 88412"
TAG = "zanzibar-vault"
CONVERSATION = "my pet marmot is called Wobblethorpe and he lives in the garden"
SECRETS = (
    re.compile(rb"(?<![0-9a-fA-F])88412(?![0-9a-fA-F])"),
    re.compile(rb"PIN "),
    re.compile(rb"zanzibar", re.IGNORECASE),
    re.compile(rb"wobblethorpe", re.IGNORECASE),
    re.compile(rb"marmot", re.IGNORECASE),
)
"""Needles searched in every file's bytes. Each is at least four bytes long (a shorter one turns
up by chance in megabytes of ciphertext and vectors), and the number counts only outside a run
of hex digits: the audit's signatures and digests are hex, where any five digits turn up by
chance about once in a million places."""


def leaks(home: Path) -> dict[str, list[str]]:
    """Every file under `home` holding one of SECRETS: path -> the needles found."""
    found: dict[str, list[str]] = {}
    for path in sorted(home.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hits = [n.pattern.decode() for n in SECRETS if n.search(data)]
        if hits:
            found[str(path.relative_to(home))] = hits
    return found


def talk(
    kernel: Kernel, proc: Process, conv: Conversation, request: str, outputs: list[Any]
) -> None:
    """One scripted turn."""
    assert isinstance(kernel.backend, ScriptedBackend)
    kernel.backend.outputs.extend(outputs)
    events = list(kernel.turn(proc, conv, request))
    assert events[-1].kind == "reply", events


def fill(system: System, workspace: Path, encrypt: bool) -> tuple[Conversation, Process]:
    """A fact with a tag through mem.store, then a conversation whose first turn (the marmot)
    is paged out and whose session is saved, then recalled by a question about it."""
    proc = system.spawn("shell", workspace)
    result = system.dispatch(proc, {"call": "mem.store", "text": FACT, "tags": [TAG]})
    assert result.ok, result
    backend = ScriptedBackend([], context=CONTEXT)
    kernel = Kernel(system, backend, example_count=0, check_replies=False)
    conv = new_conversation(system.settings.home, encrypt=encrypt)
    talk(kernel, proc, conv, CONVERSATION, [{"call": "reply", "text": "Noted."}])
    for n in range(2, 30):
        talk(
            kernel,
            proc,
            conv,
            f"tell me something about the number {n} and why people like it so much",
            [{"call": "reply", "text": f"{n} is a fine number; it comes after {n - 1}."}],
        )
    assert conv.paged_out >= 1 and conv.turns[0].number > 1, "the marmot turn is paged out"
    system.memory.flush(60)
    talk(
        kernel,
        proc,
        conv,
        "what is the name of my pet?",
        [{"call": "reply", "text": "He is called Wobblethorpe."}],
    )
    assert conv.pager is not None
    recalled = conv.pager.stats.last_recalled
    assert recalled and recalled[0].turn == 1 and "Wobblethorpe" in recalled[0].text
    return conv, proc


@pytest.fixture
def encrypted(llmos_home: Path, embedder: Embedder) -> Iterator[System]:
    """A system whose memory is encrypted."""
    with System(Settings(home=llmos_home, memory_encrypt=True), plugins=False) as system:
        yield system


def test_no_secret_word_is_on_disk_and_everything_still_reads_back(
    encrypted: System, llmos_home: Path, workspace: Path
) -> None:
    conv, proc = fill(encrypted, workspace, encrypt=True)
    (workspace / "pins.txt").write_text("the safe's PIN is 88412\n")
    found = encrypted.dispatch(proc, {"call": "fs.search", "query": "safe code number"})
    assert found.ok and "88412" in json.dumps(found.value), "search by meaning over files works"
    memory = encrypted.memory
    hits = memory.search("what is my bank code", k=1)
    assert hits[0].text == FACT and hits[0].record.tags == (TAG,)
    assert [h.text for h in memory.search("code", k=5, tags=[TAG])] == [FACT]
    assert memory.search("code", k=5, tags=["other"]) == []
    page = next(r for r in memory.db.all("recall") if r.meta["turn"] == 1)
    assert "Wobblethorpe" in page.text and "Wobblethorpe" in str(page.meta["messages"])
    assert leaks(llmos_home) == {}, "open: nothing in the store, its WAL or the index"
    encrypted.close()
    assert leaks(llmos_home) == {}, "closed"
    assert not (llmos_home / "memory" / "chroma").exists(), "the index is kept in memory"
    assert conv.pager is not None and conv.pager.session is not None
    again = resume_conversation(llmos_home, encrypt=True)
    assert again.pager is not None and again.pager.session_id == conv.pager.session_id
    assert [t.messages for t in again.turns] == [t.messages for t in conv.turns]
    assert again.summary == conv.summary and again.paged_out == conv.paged_out
    assert "Wobblethorpe" in json.dumps([t.messages for t in again.turns])
    with Memory.open(Settings(home=llmos_home, memory_encrypt=True)) as reopened:
        assert reopened.search("bank PIN", k=1)[0].text == FACT
        assert reopened.search("marmot", k=1, collections=("recall",))[0].record.meta["turn"] == 1


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_without_encryption_everything_is_stored_as_before(
    system: System, llmos_home: Path, workspace: Path
) -> None:
    fill(system, workspace, encrypt=False)
    system.close()
    con = sqlite3.connect(llmos_home / "memory" / DB_FILE)
    rows = con.execute("SELECT text, encrypted, tags, meta FROM records ORDER BY seq").fetchall()
    con.close()
    assert rows[0][:3] == (FACT.encode(), 0, json.dumps([TAG]))
    assert json.loads(rows[0][3]) == {"process": "shell", "source": "mem.store"}
    assert all(encrypted == 0 for _, encrypted, _, _ in rows)
    assert any("Wobblethorpe" in json.loads(meta).get("messages", "") for *_, meta in rows)
    session = json.loads(next((llmos_home / "sessions").glob("*.json")).read_text())
    assert "Wobblethorpe" in json.dumps(session["turns"]) and "sealed" not in session
    assert not (llmos_home / "keys" / "memory.key").exists(), "no memory key is made"
    with Memory.open(Settings(home=llmos_home)) as memory:
        assert memory.db.get_meta("index_tags") in (None, "plain")
        assert [h.text for h in memory.search("code", k=5, tags=[TAG])] == [FACT]


def test_turning_encryption_on_seals_an_existing_store(
    llmos_home: Path, embedder: Embedder
) -> None:
    with Memory.open(Settings(home=llmos_home)) as memory:
        memory.store(FACT, tags=[TAG])
        memory.store("the marmot Wobblethorpe", collection="recall", meta={"session": "s1"})
        for n in range(40):  # pages enough to leave freed pages behind
            memory.store(f"filler fact number {n} " * 20)
        memory.forget([r.id for r in memory.db.all() if r.text.startswith("filler")])
        assert memory.search("bank PIN", k=1, tags=[TAG])[0].text == FACT
    assert leaks(llmos_home), "in clear before"
    with Memory.open(Settings(home=llmos_home, memory_encrypt=True)) as memory:
        assert memory.db.sealed_on_open == 2
        assert leaks(llmos_home) == {}, "sealed, compacted and the WAL emptied on open"
        hits = memory.search("bank PIN", k=1, tags=[TAG])
        assert hits and hits[0].text == FACT, "the index was rebuilt with keyed tags"
        assert memory.index_action.startswith("rebuilt")
        assert memory.db.get_meta("index_tags") == "keyed"
        session = memory.search("marmot", k=1, collections=("recall",), session="s1")
        assert session[0].text == "the marmot Wobblethorpe"
    assert leaks(llmos_home) == {}
    with Memory.open(Settings(home=llmos_home, memory_encrypt=True)) as memory:
        assert memory.db.sealed_on_open == 0
        assert memory.search("bank PIN", k=1, tags=[TAG])[0].text == FACT
    with Memory.open(Settings(home=llmos_home)) as memory:  # off again: still readable
        assert memory.search("bank PIN", k=1, tags=[TAG])[0].text == FACT
        assert memory.db.get_meta("index_tags") == "plain"


def test_a_store_with_sealed_records_refuses_a_new_key(llmos_home: Path) -> None:
    folder, key = llmos_home / "memory", llmos_home / "keys" / "memory.key"
    with MemoryStore(folder, encrypt=True, key_path=key) as store:
        store.add("archival", FACT)
    key.unlink()
    with pytest.raises(LlmosError) as err:
        MemoryStore(folder, encrypt=True, key_path=key)
    assert err.value.code == ErrorCode.E_IO and "missing" in err.value.message
    assert not key.exists(), "a lost key is not replaced by one that opens nothing"


def test_a_sealed_session_needs_its_key(llmos_home: Path) -> None:
    session = SessionFile(llmos_home, "s1", encrypt=True)
    conv = Conversation()
    conv.summary = "- turn 1: user: " + CONVERSATION
    session.save(conv, "shell")
    assert b"Wobblethorpe" not in session.path.read_bytes()
    loaded = Conversation()
    SessionFile(llmos_home, "s1").load(loaded)  # opened whatever encrypt says
    assert loaded.summary == conv.summary
    (llmos_home / "keys" / "memory.key").unlink()
    with pytest.raises(LlmosError) as err:
        SessionFile(llmos_home, "s1").load(Conversation())
    assert err.value.code == ErrorCode.E_IO and "session s1" in err.value.message


def test_the_file_index_stays_in_memory_when_encrypted(
    llmos_home: Path, workspace: Path, embedder: Embedder
) -> None:
    (workspace / "pins.txt").write_text("the safe's PIN is 88412\n")
    ws = Workspace(workspace)
    with FileIndex.open(Settings(home=llmos_home), ws, embedder) as plain:
        plain.refresh()
        assert plain.path.exists() and not plain.in_memory
    assert leaks(llmos_home), "a plain index keeps the files' text"
    with FileIndex.open(Settings(home=llmos_home, memory_encrypt=True), ws, embedder) as index:
        assert index.in_memory
        assert index.search("safe code number").hits[0].text.startswith("the safe's PIN")
        assert leaks(llmos_home) == {}, "the plain index was deleted, nothing written"
