"""`llmos bench memory` at a tiny size (its output, not its timings), and what made its figures
better: the session search over the store's vectors, the direct query embedding, the indexer
that lets a page-in go first, and pages stored with their vectors (the bench's corpus)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmos.bench.memory import CURRENT, bench_memory
from llmos.cli import main
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.memory.embedder import Embedder
from llmos.memory.indexer import Indexer
from llmos.memory.memory import Memory
from llmos.memory.store import DB_FILE, NewRecord
from llmos.syscalls.services import Record


def _pair(figure: dict[str, float]) -> None:
    assert 0 < figure["p50_ms"] <= figure["p99_ms"]


def test_bench_memory_prints_and_writes_its_figures(
    embedder: Embedder, tmp_path: Path, llmos_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--sizes", "30", "--samples", "3", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["embedder"] == "all-MiniLM-L6-v2" and figures["cpus"] >= 1
    assert figures["embed"]["texts"] == 30 and figures["embed"]["texts_per_s"] > 0
    assert figures["corpus"] == {"embedded": 30, "reused": 0, "noise": 0.35, "session_pages": 30}
    [level] = figures["levels"]
    assert level["size"] == 30 and level["pages"] == 30
    for name in ("page_out", "until_indexed", "page_in", "page_in_cached_query", "query_embed"):
        _pair(level[name])
    assert level["until_indexed"]["p50_ms"] >= level["page_out"]["p50_ms"]
    assert level["hits"] == level["hits_in_session"] == 5, "page-ins find only their session"
    text = capsys.readouterr().out
    assert text.startswith("bench memory: all-MiniLM-L6-v2, local index, not encrypted")
    assert "texts/s batched" in text and "     30 pages" in text and "targets:" in text
    assert not (llmos_home / "memory").exists(), "the bench ran in a scratch home"


def test_bench_memory_reuses_vectors_past_the_distinct_pages(
    embedder: Embedder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "bench-home"
    figures = bench_memory(
        Settings(home=tmp_path / "unused"),
        sizes=(40, 12),
        samples=2,
        distinct=12,
        session_pages=10,
        home=home,
    )
    assert [level["size"] for level in figures["levels"]] == [12, 40]
    assert [level["pages"] for level in figures["levels"]] == [12, 40]
    assert figures["corpus"]["embedded"] == 12 and figures["corpus"]["reused"] == 40 - 12 - 2
    assert figures["corpus"]["session_pages"] == 10
    with Memory.open(Settings(home=home)) as memory:
        assert memory.db.count("recall") == 40 + 2
        assert memory.index.count("recall") == memory.db.count("recall")
    with pytest.raises(LlmosError) as err:
        bench_memory(Settings(home=home), sizes=(5,), samples=1, home=home)
    assert err.value.code == ErrorCode.E_INVAL and "already holds memories" in err.value.message


def _pages(memory: Memory) -> None:
    rooms = ["B12", "C7", "D3", "the attic", "the blue room", "room 101"]
    items = [
        NewRecord(
            text=f"user: where is the {what}? reply: the {what} is in {room}",
            tags=["office"] if n % 2 else [],
            meta={"session": "s1" if n % 3 else "s2", "turn": n},
        )
        for n, (what, room) in enumerate(
            (what, room) for what in ("meeting", "printer", "coffee machine") for room in rooms
        )
    ]
    memory.store_many(items, "recall")
    assert memory.flush(60)


def test_a_session_search_ranks_as_the_index_would(memory: Memory) -> None:
    _pages(memory)
    query = "where can I print?"
    vector = memory.embedder.embed_one(query)
    for session in ("s1", "s2"):
        expected = memory.index.query("recall", vector, 18, {"session": session})
        hits = memory.search(query, k=18, collections=["recall"], session=session, by_words=False)
        assert [h.id for h in hits] == [i for i, _ in expected]
        for hit, (_, distance) in zip(hits, expected, strict=True):
            assert hit.score == pytest.approx(1.0 - distance, abs=2e-4)
            assert hit.record.meta["session"] == session
    office = memory.search(query, k=3, collections=["recall"], session="s1", tags=["office"])
    assert len(office) == 3 and all("office" in h.record.tags for h in office)
    odd = memory.search(
        query, k=2, collections=["recall"], session="s1", allow=lambda r: r.id in ("r2", "r3")
    )
    assert sorted(h.id for h in odd) == ["r2", "r3"]
    close = memory.search(query, k=18, collections=["recall"], session="s1", min_score=0.4)
    assert close and all(h.score >= 0.4 for h in close)
    assert memory.search(query, collections=["recall"], session="nobody") == []
    memory.forget(["r2"])
    assert "r2" not in {h.id for h in memory.search(query, k=18, session="s1")}


def test_a_session_search_reads_only_its_session(memory: Memory, llmos_home: Path) -> None:
    _pages(memory)
    con = sqlite3.connect(llmos_home / "memory" / DB_FILE)
    plan = con.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM records WHERE collection = 'recall'"
        " AND CAST(json_extract(meta, '$.session') AS TEXT) = 's1'"
    ).fetchall()
    con.close()
    assert "USING INDEX records_by_session" in str(plan)


def test_an_encrypted_session_search(llmos_home: Path, embedder: Embedder) -> None:
    with Memory.open(Settings(home=llmos_home, memory_encrypt=True)) as memory:
        _pages(memory)
        hits = memory.search("where is the coffee?", k=2, session="s2")
        assert len(hits) == 2 and "coffee" in hits[0].text


def test_the_query_embedding_is_the_batch_embedding(embedder: Embedder) -> None:
    for text in ("where can I print?", "x", "a long request " * 100):
        assert embedder.embed_one(text) == embedder.embed([text])[0]


def test_pages_stored_with_their_vectors(memory: Memory) -> None:
    vectors = memory.embedder.embed(["the printer is in D3", "lunch is at noon"])
    items = [
        NewRecord(text="the printer is in D3", meta={"session": CURRENT}, vector=vectors[0]),
        NewRecord(text="lunch is at noon", meta={"session": CURRENT}, vector=vectors[1]),
    ]
    records = memory.store_embedded(items, "recall")
    assert [r.id for r in records] == ["r1", "r2"]
    assert memory.index.count("recall") == 2, "indexed before store_embedded returns"
    assert memory.db.vector("r1") == pytest.approx(vectors[0], abs=1e-7)
    assert memory.search("where is the printer?", k=1, session=CURRENT)[0].id == "r1"
    assert memory.search("where is the printer?", k=1)[0].id == "r1"
    with pytest.raises(LlmosError) as err:
        memory.store_embedded([NewRecord(text="no vector")], "recall")
    assert err.value.code == ErrorCode.E_INVAL
    assert memory.store_embedded([], "recall") == []


def test_the_indexer_waits_a_moment_unless_flushed_or_stopped() -> None:
    done: list[str] = []
    started = threading.Event()

    def index(batch: Sequence[Record]) -> None:
        started.set()
        done.extend(r.id for r in batch)

    indexer = Indexer(index, lambda exc: None, start_delay=60)
    indexer.submit([Record(id="r1", collection="recall", text="one")])
    assert not started.wait(0.2), "a search just after the store embeds its query first"
    assert indexer.flush(timeout=30) and done == ["r1"], "a flush does not wait out the delay"
    indexer.submit([Record(id="r2", collection="recall", text="two")])
    assert indexer.stop(timeout=30) and done == ["r1", "r2"], "nor does closing"
