"""The person's lessons (llmos.kernel.lessons): kept, replaced, hidden, bounded, sealed, and
put in the example bank above the built-ins."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.examples import ExampleBank
from llmos.kernel.lessons import Lessons, scope_of
from llmos.limits import EXAMPLE_MIN_SCORE, LESSON_MIN_SCORE
from llmos.system import System

NOTE = {"call": "mem.store", "text": "the boiler is serviced in March"}
FORGET = {"call": "mem.forget", "query": "boiler"}


def test_a_request_taught_twice_keeps_the_newest(tmp_path: Path) -> None:
    lessons = Lessons(tmp_path)
    lessons.add("keep in mind that the boiler is serviced in March", [FORGET])
    newest = lessons.add("Keep in mind that  the boiler is serviced in March", [NOTE])
    again = Lessons(tmp_path).all()  # read back from disk
    assert [(x.id, x.calls) for x in again] == [(newest.id, [NOTE])]


def test_a_bad_mark_drops_the_same_calls_and_hides_them_from_the_bank(tmp_path: Path) -> None:
    lessons = Lessons(tmp_path)
    lessons.add("chuck temp.csv in the bin", [{"call": "fs.mkdir", "path": "bin"}], "good")
    lessons.add("chuck temp.csv in the bin", [{"call": "fs.mkdir", "path": "bin"}], "bad")
    assert [x.kind for x in lessons.all()] == ["bad"]
    bank = ExampleBank()
    bank.add("chuck temp.csv in the bin", {"call": "fs.mkdir", "path": "bin"}, source="app")
    assert lessons.teach_bank(bank) == 0
    assert bank.examples() == [], "an example the person marked bad is never shown"
    bank.add("chuck temp.csv in the bin", {"call": "fs.mkdir", "path": "bin"}, source="app")
    assert bank.examples() == [], "nor added again"


def test_the_store_is_bounded_and_the_least_used_go_first(tmp_path: Path) -> None:
    lessons = Lessons(tmp_path, limit=3)
    first = lessons.add("note one", [NOTE])
    lessons.add("note two", [NOTE])
    lessons.used(["note one"])
    lessons.add("never do this", [FORGET], "bad")
    lessons.add("note three", [NOTE])
    kept = {x.request for x in lessons.all()}
    assert kept == {"note one", "never do this", "note three"}
    assert next(x for x in lessons.all() if x.id == first.id).uses == 1


def test_forget_one_or_all_and_turn_learning_off(tmp_path: Path) -> None:
    lessons = Lessons(tmp_path)
    one = lessons.add("note one", [NOTE])
    lessons.add("note two", [NOTE])
    assert lessons.forget(one.id) == 1 and lessons.forget("nope") == 0
    lessons.set_enabled(False)
    bank = ExampleBank()
    assert lessons.teach_bank(bank) == 0 and len(bank) == 0
    lessons.set_enabled(True)
    assert lessons.teach_bank(bank) == 1
    assert lessons.forget(None) == 1 and lessons.all() == []


def test_import_checks_every_call_and_names_the_bad_line(system: System, tmp_path: Path) -> None:
    good = {
        "request": "start a new empty file called x.txt",
        "calls": [{"call": "fs.write", "path": "x.txt", "content": ""}],
    }
    bad = {"request": "bin it", "calls": [{"call": "fs.nuke", "path": "x"}]}
    source = tmp_path / "teach.jsonl"
    source.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(LlmosError) as caught:
        system.lessons.import_file(source, system.registry)
    assert caught.value.code == ErrorCode.E_NOSYS
    assert f"{source}:3" in caught.value.message and "fs.nuke" in caught.value.message
    assert system.lessons.all() == [], "all or nothing"
    source.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(LlmosError, match=r"teach.jsonl:2: not JSON"):
        system.lessons.import_file(source, system.registry)
    source.write_text(json.dumps(good) + "\n")
    assert [x.request for x in system.lessons.import_file(source, system.registry)] == [
        good["request"]
    ]


def test_lessons_are_sealed_when_memory_is_encrypted(llmos_home: Path) -> None:
    settings = Settings(home=llmos_home, memory_encrypt=True)
    with System(settings, plugins=False) as system:
        system.lessons.add("remember that my locker code is 4471", [NOTE])
    raw = b"".join(p.read_bytes() for p in (llmos_home / "learned").iterdir())
    assert b"locker" not in raw and b"mem.store" not in raw
    with System(settings, plugins=False) as system:
        assert [x.request for x in system.lessons.all()] == ["remember that my locker code is 4471"]
        assert any(e.source == "taught" for e in system.examples.examples())


def test_a_lesson_naming_workspace_paths_holds_in_that_workspace_alone(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    (here / "temp.csv").write_text("a,b\n")
    assert scope_of("chuck temp.csv in the bin", here) == str(here.resolve())
    assert scope_of("chuck temp.csv in the bin", there) is None
    assert scope_of("keep in mind that I like tea", here) is None
    bank = ExampleBank()
    bank.add(
        "chuck temp.csv in the bin",
        {"call": "fs.delete", "path": "temp.csv"},
        source="taught",
        scope=str(here),
    )
    assert bank.ranked("chuck temp.csv in the bin", workspace=str(here))
    assert bank.ranked("chuck temp.csv in the bin", workspace=str(there)) == []


class Fixed:
    """An embedder whose vectors are given: the cosines between requests are chosen (any
    other text is at right angles to all of them)."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(t) for t in texts]

    def embed_one(self, text: str) -> list[float]:
        return self.vectors.get(text, [0.0, 0.0, 1.0])


def unit(cosine: float) -> list[float]:
    """A vector at `cosine` to (1, 0, 0)."""
    return [cosine, math.sqrt(1 - cosine * cosine), 0.0]


def test_the_persons_examples_rank_above_the_builtins_when_near_enough() -> None:
    asked = "keep in mind that the gas man comes on Tuesday"
    bank = ExampleBank(
        embedder=Fixed(
            {
                asked: [1.0, 0.0, 0.0],
                "never forget: the bins go out on Monday": unit(0.60),
                "don't forget that the boiler man comes on Monday": unit(0.50),
                "remind me what I said about tea": unit(0.40),
            }
        )
    )
    bank.add("never forget: the bins go out on Monday", FORGET)
    bank.add("don't forget that the boiler man comes on Monday", NOTE, source="taught")
    bank.add(
        "remind me what I said about tea", {"call": "mem.search", "query": "tea"}, source="good"
    )
    ranked = bank.ranked(asked, min_score=EXAMPLE_MIN_SCORE)
    assert [e.source for e in ranked] == ["taught", "builtin"]
    # Under LESSON_MIN_SCORE a lesson is not shown, though a built-in that close would be.
    assert EXAMPLE_MIN_SCORE < 0.40 < LESSON_MIN_SCORE


def test_the_benchs_thousand_lessons_are_distinct_and_valid(system: System) -> None:
    from llmos.bench.lessons import lessons

    made = lessons(1000)
    assert len({request for request, _ in made}) == 1000
    for _, calls in made[:40]:  # every frame, every content
        for call in calls:
            system.registry.parse(call)


def test_only_a_near_lesson_widens_what_a_request_may_do(system: System, workspace: Path) -> None:
    from llmos.kernel.backend import ScriptedBackend
    from llmos.kernel.loop import Conversation, Kernel

    gist = "give me the gist of plan.txt"
    system.examples.embedder = Fixed(
        {gist: [1.0, 0.0, 0.0], "keep in mind that Sam is allergic to nuts": unit(0.5)}
    )
    system.lessons.add("keep in mind that Sam is allergic to nuts", [NOTE])
    system.lessons.add("ditch temp.log", [{"call": "fs.delete", "path": "temp.log"}])
    system.lessons.teach_bank(system.examples)
    warming = system.examples.warm()
    if warming is not None:
        warming.join()
    kernel = Kernel(system, ScriptedBackend([]))
    proc = system.spawn("t", workspace, patterns=["fs.*", "mem.*", "reply", "ask"])
    (workspace / "scratch.txt").write_text("x\n")
    kernel.begin(proc, Conversation(), "ditch scratch.txt")
    assert "delete" in proc.allows, "said the way a lesson was, it may do what that did"
    kernel.begin(proc, Conversation(), gist)
    assert "remember" not in proc.allows, "a lesson 0.5 alike is shown, but widens nothing"
    system.lessons.set_enabled(False)
    kernel.begin(proc, Conversation(), "ditch scratch.txt")
    assert "delete" not in proc.allows
