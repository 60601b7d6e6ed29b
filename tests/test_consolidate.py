"""Consolidation while idle (llmos.consolidate): facts stored twice or replaced are marked,
never deleted; learned examples said twice are merged, the person's never; it stops when
asked, and the shell's idle timer starts and stops it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from llmos.config import Settings
from llmos.consolidate import IdleTidy, Tidied, consolidate
from llmos.kernel.examples import ExampleBank
from llmos.syscalls.mem import REPLACED_BY, SAME_AS
from llmos.system import System
from tests.kernel.test_lessons import Fixed, unit

FACTS = [
    "the boiler code is 1234",
    "Mira lives in Oslo",
    "Sam likes tea",
    "The boiler code is 1234.",
    "the spare key is under the mat",
    "the boiler code is 5678",
    "Mira works in Oslo",
    "Sam likes jazz",
    "the spare key is under the flower pot",
]


class StopAfter(threading.Event):
    """An event that reads as set from its `n`th check on (a request arriving mid-way)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0 or super().is_set()


def test_facts_stored_twice_or_replaced_are_marked_and_none_deleted(system: System) -> None:
    ids = [system.memory.store(text).id for text in FACTS]
    done = consolidate(system, threading.Event())
    assert (done.facts_same, done.facts_replaced, done.stopped) == (1, 2, False)
    meta = {r.id: r.meta for r in system.memory.db.all("archival")}
    assert len(meta) == len(FACTS), "nothing is deleted"
    assert meta[ids[3]][SAME_AS] == ids[0]
    assert meta[ids[0]][REPLACED_BY] == ids[5], "1234, then 5678: the later one stands"
    assert meta[ids[4]][REPLACED_BY] == ids[8]
    for i in (1, 2, 5, 6, 7, 8):  # lives/works and likes tea/jazz may all be true
        assert REPLACED_BY not in meta[ids[i]] and SAME_AS not in meta[ids[i]]
    again = consolidate(system, threading.Event())
    assert (again.facts_same, again.facts_replaced) == (0, 0), "marking twice changes nothing"


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_a_search_shows_a_copy_once_and_names_the_fact_that_replaced_one(
    system: System, workspace: Path
) -> None:
    ids = [system.memory.store(text).id for text in FACTS[:6]]
    consolidate(system, threading.Event())
    proc = system.spawn("t", workspace, patterns=["mem.*"])
    result = system.dispatch(proc, {"call": "mem.search", "query": "boiler code", "k": 5})
    assert result.ok, result.message
    hits = {h["id"]: h for h in result.value["hits"]}
    assert ids[3] not in hits, "the copy shows where the first does"
    assert hits[ids[0]]["replaced_by"] == ids[5]
    assert "replaced_by" not in hits[ids[5]], "left out while there is none"


def test_marks_are_sealed_with_an_encrypted_memory(llmos_home: Path) -> None:
    with System(Settings(home=llmos_home, memory_encrypt=True), plugins=False) as system:
        first = system.memory.store("the boiler code is 1234")
        later = system.memory.store("the boiler code is 5678")
        consolidate(system, threading.Event())
        (row,) = system.memory.db._db.execute(
            "SELECT meta, text FROM records WHERE id = ?", (first.id,)
        ).fetchall()
        assert later.id not in row[0] and b"1234" not in row[1]
        assert system.memory.db.get(first.id).meta[REPLACED_BY] == later.id  # type: ignore[union-attr]


def test_learned_examples_said_twice_are_merged_and_the_persons_never(system: System) -> None:
    read = [{"call": "fs.read", "path": "notes.txt"}]
    system.examples.embedder = Fixed(
        {
            "show me notes.txt": [1.0, 0.0, 0.0],
            "show notes.txt to me": unit(0.95),
            "peek at notes.txt": unit(0.95),
            "list the folder": unit(0.95),
        }
    )
    lessons = system.lessons
    one = lessons.add("show me notes.txt", read, "learned")
    two = lessons.add("show notes.txt to me", read, "learned")
    assert one is not None and two is not None
    lessons.used(["show notes.txt to me"])
    lessons.add("peek at notes.txt", read, "taught")
    lessons.add("list the folder", [{"call": "fs.list"}], "learned")
    lessons.teach_bank(system.examples)
    done = consolidate(system, threading.Event())
    assert done.lessons_merged == 1
    kept = {(x.request, x.kind, x.uses) for x in lessons.all()}
    assert kept == {
        ("show notes.txt to me", "learned", 1),
        ("peek at notes.txt", "taught", 0),
        ("list the folder", "learned", 0),
    }, "the more used stays; the taught one and other calls are left alone"
    shown = {e.request for e in system.examples.examples() if e.source != "builtin"}
    assert shown == {"show notes.txt to me", "peek at notes.txt", "list the folder"}


def test_it_stops_when_a_request_arrives_and_finishes_next_time(system: System) -> None:
    for text in FACTS:
        system.memory.store(text)
    stopped = threading.Event()
    stopped.set()
    none = consolidate(system, stopped)
    assert none.stopped and (none.facts_same, none.facts_replaced, none.lessons_merged) == (0, 0, 0)
    part = consolidate(system, StopAfter(6))
    assert part.stopped and part.facts_same + part.facts_replaced < 3
    rest = consolidate(system, threading.Event())
    assert (part.facts_same + rest.facts_same, part.facts_replaced + rest.facts_replaced) == (1, 2)


def test_the_idle_timer_runs_once_and_a_request_stops_it() -> None:
    started, finished = threading.Event(), threading.Event()

    def work(stop: threading.Event) -> Tidied:
        started.set()
        stop.wait(30)
        finished.set()
        return Tidied(stopped=stop.is_set())

    idle = IdleTidy(work, after=0.01)
    idle.rest()
    assert started.wait(30), "it starts once the shell has been idle"
    idle.wake()
    assert finished.is_set() and idle.last is not None and idle.last.stopped
    quiet = IdleTidy(work, after=60)
    started.clear()
    quiet.rest()
    quiet.wake()  # a request before the countdown ends: nothing runs
    assert not started.is_set() and quiet.last is None


def test_a_bank_without_an_embedder_compares_nothing() -> None:
    assert ExampleBank().similarity("a", "b") is None


def test_the_shell_tidies_on_request(system: System, workspace: Path) -> None:
    from llmos.shell.repl import Shell

    system.memory.store("the boiler code is 1234")
    system.memory.store("the boiler code is 5678")
    shell = Shell(system, workspace, grant=None, kernel=None)
    ok, text = shell.handle(":tidy")
    assert ok and "1 replaced by later ones" in text
    assert shell.idle is not None and shell.idle.after == system.settings.tidy_idle_s


def test_a_memory_that_cannot_open_is_skipped_and_the_rest_is_tidied(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmos.errors import ErrorCode, LlmosError
    from llmos.kernel.loop import Conversation

    def held(self: System) -> None:
        raise LlmosError(ErrorCode.E_IO, "memory store is in use by another llmos")

    monkeypatch.setattr(System, "memory", property(held))
    conversation = Conversation()
    conversation.summary = "- turn 1: user: hi\n- turn 1: user: hi\n- turn 2: user: bye"
    done = consolidate(system, threading.Event(), conversation)
    assert done.skipped == ["facts: E_IO: memory store is in use by another llmos"]
    assert done.summary_lines == 1 and conversation.summary.count("turn 1") == 1
