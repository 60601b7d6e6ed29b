"""The Memory facade: durable store, searchable index, forgetting, and self-healing index."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llmos.memory
import llmos.memory.memory as memory_module
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.memory.embedder import Embedder
from llmos.memory.index import Health
from llmos.memory.memory import WORDS_WEIGHT, Memory
from llmos.memory.store import DB_FILE, NewRecord
from llmos.memory.when import Window
from llmos.syscalls.services import Hit, Record

FACTS = [
    ("My cat is called Miso", ["pets"]),
    ("The wifi password is hunter2", ["home"]),
    ("Deploys happen on Fridays at 5pm", ["work"]),
    ("My sister's birthday is March 3rd", ["family"]),
    ("I prefer tea over coffee", []),
]


def _fill(memory: Memory) -> list[Record]:
    """Store the facts and wait until they are indexed."""
    records = [memory.store(text, tags=tags) for text, tags in FACTS]
    assert memory.flush(timeout=60)
    return records


def _crash(memory: Memory) -> None:
    """Stop without the clean close (as a killed process would): the index is left 'dirty'."""
    memory.index.close()
    memory.db.close()


def test_store_then_search_by_meaning(memory: Memory) -> None:
    assert memory.search("anything") == []
    stored = _fill(memory)
    assert stored[0].id == "a1" and stored[0].tags == ("pets",)
    hits = memory.search("what is my cat's name?", k=3)
    assert len(hits) == 3 and hits[0].id == "a1"
    assert hits[0].text == "My cat is called Miso"
    assert 0.5 < hits[0].score <= 1.0
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert memory.search("when is the deploy", k=1)[0].record.tags == ("work",)


def test_tags_must_all_match(memory: Memory) -> None:
    _fill(memory)
    memory.store("Miso hates the vet", tags=["pets", "health"])
    assert [h.id for h in memory.search("cat", tags=["pets"])] == ["a1", "a6"]
    assert [h.id for h in memory.search("cat", tags=["PETS", "health"])] == ["a6"]
    assert memory.search("cat", tags=["nothing-tagged-so"]) == []
    with pytest.raises(LlmosError) as err:
        memory.store("x", tags=["a/b"])
    assert err.value.code == ErrorCode.E_INVAL
    assert memory.db.count() == 6


def test_recall_pages_by_session(memory: Memory) -> None:
    _fill(memory)
    pages = [
        NewRecord(
            text=f"user: the meeting room is {room}",
            meta={"session": session, "turn_start": n, "turn_end": n, "source": "pager"},
        )
        for n, (room, session) in enumerate([("B12", "s1"), ("C7", "s2")])
    ]
    assert [r.id for r in memory.store_many(pages, "recall")] == ["r6", "r7"]
    hits = memory.search("which meeting room?", collections=["recall"], session="s2")
    assert [h.id for h in hits] == ["r7"]
    assert hits[0].record.meta["source"] == "pager"
    both = memory.search("which meeting room?", k=10)
    assert {"r6", "r7"} <= {h.id for h in both}


def test_around_gives_the_pages_said_beside_a_turn_in_order(memory: Memory) -> None:
    same = memory.embedder.embed_one("a chat about the weekend")
    memory.store_embedded(
        [
            NewRecord(text=f"page {n}", meta={"session": s, "turn": n}, vector=same)
            for s in ("s", "other")
            for n in (5, 3, 4, 1, 2)
        ],
        "recall",
    )

    def turns(found: list[Record]) -> list[object]:
        return [r.meta["turn"] for r in found]

    assert turns(memory.around("recall", "s", 3, 1, 1)) == [2, 3, 4], "read without a search"
    assert {r.meta["session"] for r in memory.around("recall", "s", 3, 1, 1)} == {"s"}
    assert turns(memory.around("recall", "s", 5, 1, 1)) == [4, 5], "the end of the session"
    memory.search("weekend", k=2, collections=["recall"], session="s")  # fills the page cache
    gone = next(r for r in memory.around("recall", "s", 2, 0, 0))
    memory.forget([gone.id])
    assert turns(memory.around("recall", "s", 3, 1, 1)) == [3, 4], "a forgotten page is not given"


def test_a_session_search_fuses_meaning_with_words(memory: Memory) -> None:
    # Every page has the same vector, so meaning alone keeps the stored order; the one page
    # holding the question's rare word comes first only through the BM25 ranking fused in.
    same = memory.embedder.embed_one("we talked about plans for the summer")
    texts = [f"Tomas: plans for the summer, talk number {n}." for n in range(12)]
    texts[9] = "Tomas: plans for the summer, and a week in Vrbnik."
    memory.store_embedded(
        [
            NewRecord(text=t, meta={"session": "s", "turn": n}, vector=same)
            for n, t in enumerate(texts)
        ],
        "recall",
    )
    question = "when is the week in Vrbnik?"
    fused = memory.search(question, k=3, collections=["recall"], session="s")
    alone = memory.search(question, k=3, collections=["recall"], session="s", by_words=False)
    assert fused[0].record.meta["turn"] == 9
    assert [h.record.meta["turn"] for h in alone] == [0, 1, 2]
    assert fused[0].score == pytest.approx(alone[0].score + WORDS_WEIGHT, abs=2e-4), (
        "the best word match adds the whole weight to its cosine"
    )
    assert fused[1].score == pytest.approx(alone[0].score, abs=2e-4), "no word, no addition"
    floor = alone[0].score + WORDS_WEIGHT / 2
    filtered = memory.search(question, k=3, collections=["recall"], session="s", min_score=floor)
    assert [h.record.meta["turn"] for h in filtered] == [9], "min_score applies to the sum"
    memory.forget([fused[0].id])
    again = memory.search(question, k=3, collections=["recall"], session="s")
    assert 9 not in [h.record.meta["turn"] for h in again], "a forgotten page leaves the words"


def test_a_session_search_puts_the_days_asked_about_first(memory: Memory) -> None:
    # Same vector and words everywhere: only the day said tells the pages apart.
    same = memory.embedder.embed_one("we talked about the studio")
    days = [dt.datetime(2023, 1 + n % 6, 10).timestamp() for n in range(12)]
    memory.store_embedded(
        [
            NewRecord(
                text="Jon: the studio is busy.",
                meta={"session": "s", "turn": n, "said": days[n]},
                vector=same,
            )
            for n in range(12)
        ],
        "recall",
    )
    question = "what did Jon say about the studio in March 2023?"

    def near(during: Window | None) -> list[Hit]:
        return memory.search(question, k=3, collections=["recall"], session="s", during=during)

    march = near(Window(dt.date(2023, 3, 1), dt.date(2023, 4, 1)))
    assert [h.record.meta["turn"] for h in march][:2] == [2, 8]
    assert march[2].record.meta["turn"] not in (2, 8), "the rest follow the days asked about"
    none = near(Window(dt.date(2020, 3, 1), dt.date(2020, 4, 1)))
    plain = near(None)
    assert [h.id for h in none] == [h.id for h in plain], "a window holding none narrows nothing"


def test_a_filter_sees_past_what_it_hides(memory: Memory) -> None:
    memory.store_many([NewRecord(text=f"the cat sat on mat {i}") for i in range(30)], "archival")
    memory.store("quarterly tax forms are due in April", tags=["money"])
    memory.store("the accountant's name is Ruth", tags=["money"])
    hits = memory.search("cat on a mat", k=2, allow=lambda r: "money" in r.tags)
    assert sorted(h.id for h in hits) == ["a31", "a32"]


def test_forget_by_id(memory: Memory) -> None:
    _fill(memory)
    gone = memory.forget(["a2", "a99"])
    assert [r.text for r in gone] == ["The wifi password is hunter2"]
    assert memory.db.get("a2") is None
    assert memory.index.count("archival") == 4
    assert all(h.id != "a2" for h in memory.search("wifi password", k=5))


def test_forget_matching_previews_then_applies(memory: Memory) -> None:
    _fill(memory)
    preview = memory.forget_matching("my cat")
    assert [h.id for h in preview] == ["a1"]
    assert memory.db.get("a1") is not None
    assert memory.forget_matching("zebra migration in the Serengeti") == []
    applied = memory.forget_matching("my cat", apply=True)
    assert [h.id for h in applied] == ["a1"]
    assert memory.db.get("a1") is None and memory.db.count() == 4


def test_index_is_only_an_index(memory: Memory) -> None:
    _fill(memory)
    memory.db.delete(["a1"])  # gone from the store, still in the index
    hits = memory.search("my cat", k=5)
    assert "a1" not in [h.id for h in hits]
    assert memory.index.count("archival") == 4  # the orphan was dropped on sight


def test_clean_reopen_skips_the_probe(
    settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[str] = []
    real = memory_module.probe_in_subprocess
    monkeypatch.setattr(
        memory_module,
        "probe_in_subprocess",
        lambda *a, **k: probes.append("probe") or real(*a, **k),
    )
    with Memory.open(settings) as first:
        _fill(first)
        assert first.last_probe is not None and first.last_probe.health is Health.MISSING
    again = Memory.open(settings)
    assert again.search("cat", k=1)[0].id == "a1"
    assert again.last_probe is not None and again.last_probe.health is Health.OK
    _crash(again)
    again.close()  # closing twice (or after a failure) is harmless
    assert probes == []
    with Memory.open(settings) as after_crash:
        after_crash.search("cat", k=1)
        assert probes == ["probe"]


def test_stale_index_is_repaired_after_a_crash(settings: Settings, embedder: Embedder) -> None:
    first = Memory.open(settings)
    _fill(first)
    first.index.delete("archival", ["a3"])  # a write that never reached the index
    first.db.delete(["a5"])  # a delete that never reached it
    _crash(first)
    with Memory.open(settings) as memory:
        assert memory.search("when do deploys happen?", k=1)[0].id == "a3"
        assert memory.last_probe is not None and memory.last_probe.health is Health.STALE
        assert memory.index_action == "repaired 2"  # not a rebuild of everything
        assert memory.index.ids("archival") == {"a1", "a2", "a3", "a4"}
        assert memory.health().health is Health.OK


def test_damaged_index_is_wiped_and_rebuilt(settings: Settings, embedder: Embedder) -> None:
    first = Memory.open(settings)
    _fill(first)
    _crash(first)
    with open(settings.home / "memory" / "chroma" / "chroma.sqlite3", "r+b") as fh:
        fh.write(b"\0garbage" * 512)
    with Memory.open(settings) as memory:
        assert memory.search("tea or coffee?", k=1)[0].id == "a5"
        assert memory.last_probe is not None and memory.last_probe.health is Health.DAMAGED
        assert memory.index_action == "rebuilt 5"
        assert memory.index.count("archival") == 5


def test_missing_index_is_rebuilt(settings: Settings, embedder: Embedder) -> None:
    with Memory.open(settings) as first:
        _fill(first)
    shutil.rmtree(settings.home / "memory" / "chroma")
    with Memory.open(settings) as memory:
        assert memory.search("sister's birthday", k=1)[0].id == "a4"
        assert memory.last_probe is not None and memory.last_probe.health is Health.MISSING


def test_another_embedding_model_forces_a_rebuild(settings: Settings, embedder: Embedder) -> None:
    with Memory.open(settings) as first:
        _fill(first)
        first.db.set_meta("index_model", "some-older-model")
    with Memory.open(settings) as memory:
        memory.search("cat", k=1)
        assert memory.last_probe is not None and memory.last_probe.health is Health.STALE
        assert "some-older-model" in memory.last_probe.reason
        assert memory.index_action == "rebuilt 5"
        assert memory.db.get_meta("index_model") == embedder.name


def test_reindex_embeds_records_stored_without_vectors(
    settings: Settings, embedder: Embedder
) -> None:
    with Memory.open(settings) as memory:
        _fill(memory)
        memory.db.add("archival", "The spare key is under the blue pot")  # no vector
        assert memory.db.vector("a6") is None
        assert memory.reindex() == 6
        assert memory.db.vector("a6") is not None
        assert memory.search("where is the spare key?", k=1)[0].id == "a6"
    assert llmos.memory.reindex(settings) == 6


def test_reindex_refuses_while_memory_is_open(memory: Memory, settings: Settings) -> None:
    start = time.monotonic()
    with pytest.raises(LlmosError) as err:
        llmos.memory.reindex(settings)
    assert err.value.code == ErrorCode.E_IO and "in use" in err.value.message
    assert time.monotonic() - start < 1.0


def test_encrypted_memory_still_searches(llmos_home: Path, embedder: Embedder) -> None:
    settings = Settings(home=llmos_home, memory_encrypt=True)
    with Memory.open(settings) as memory:
        _fill(memory)
        assert memory.search("wifi password", k=1)[0].text == "The wifi password is hunter2"
        assert memory.reindex() == 5  # from sealed vectors
    con = sqlite3.connect(llmos_home / "memory" / DB_FILE)
    texts = [row[0] for row in con.execute("SELECT text FROM records")]
    con.close()
    assert all(b"hunter2" not in t for t in texts)
    assert (llmos_home / "keys" / "memory.key").stat().st_mode & 0o077 == 0


def test_store_survives_an_unreachable_index(
    llmos_home: Path, embedder: Embedder, unused_port: int
) -> None:
    settings = Settings(home=llmos_home, memory_server=f"http://127.0.0.1:{unused_port}")
    with Memory.open(settings) as memory:
        record = memory.store("Kept even when the index server is down")
        assert memory.db.get(record.id) == record
        with pytest.raises(LlmosError) as err:
            memory.search("index server")
        assert err.value.code == ErrorCode.E_BACKEND


def test_store_is_durable_before_it_is_embedded(llmos_home: Path, embedder: Embedder) -> None:
    broken = Settings(home=llmos_home, memory_embedder=llmos_home / "no-such-model")
    with Memory.open(broken) as memory:
        record = memory.store("Stored even though no embedding model loads")
        assert memory.db.get(record.id) == record
        with pytest.raises(LlmosError) as err:
            memory.search("embedding model")
        assert err.value.code == ErrorCode.E_BACKEND
    with Memory.open(Settings(home=llmos_home)) as memory:  # a working model: rebuilt, found
        assert memory.search("embedding model", k=1)[0].id == record.id
        assert memory.db.vector(record.id) is not None


def test_memory_on_a_chroma_server(
    llmos_home: Path, embedder: Embedder, chroma_server: str
) -> None:
    settings = Settings(home=llmos_home, memory_server=chroma_server)
    with Memory.open(settings) as memory:
        _fill(memory)
        assert memory.search("my cat's name", k=1)[0].id == "a1"
        memory.forget(["a1"])
        assert memory.index.count("archival") == 4
        assert not (llmos_home / "memory" / "chroma").exists()
    with Memory.open(settings) as memory:  # clean reopen: checked in-process, nothing rebuilt
        assert memory.search("tea", k=1)[0].id == "a5"
        assert memory.last_probe is not None and memory.last_probe.health is Health.OK


def test_warm_prepares_in_the_background(memory: Memory) -> None:
    memory.warm()
    memory.warm()
    assert memory._warmer is not None
    memory._warmer.join(timeout=60)
    assert memory._index_ready
    _fill(memory)
    assert memory.search("cat", k=1)[0].id == "a1"


def test_a_warm_up_that_fails_unexpectedly_is_logged_and_the_first_use_retries(
    memory: Memory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = memory._prepare_index
    calls = []

    def failing() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the store went away mid-import")
        real()

    monkeypatch.setattr(memory, "_prepare_index", failing)
    with caplog.at_level("WARNING"):
        memory.warm()
        assert memory._warmer is not None
        memory._warmer.join(timeout=60)
    assert "RuntimeError: the store went away mid-import" in caplog.text
    assert not memory._index_ready
    _fill(memory)
    assert memory.search("cat", k=1)[0].id == "a1" and len(calls) == 2


OFFLINE = """
import socket, sys, time
from pathlib import Path

def refuse(*args, **kwargs):
    raise AssertionError(f"network use: {args}")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from llmos.config import Settings
from llmos.memory.memory import Memory

start = time.monotonic()
memory = Memory.open(Settings(home=Path(sys.argv[1])))
record = memory.store("The boiler was serviced in May")
stored = time.monotonic() - start
loaded_then = memory.embedder.loaded
hits = memory.search("when was the boiler serviced?", k=1)
memory.close()
print(stored < 3.0, loaded_then, [h.id for h in hits] == [record.id])
"""


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_offline_and_open_at_once(llmos_home: Path) -> None:
    """With every socket refused, memory opens and stores at once (the model loads later, in
    the background) and then finds what it stored: no model hub, no Chroma telemetry, no
    default embedding download."""
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE, str(llmos_home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "True"]
