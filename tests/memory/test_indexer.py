"""The background indexer: batches, ordering, flush, failure reporting and shutdown."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from llmos.memory.indexer import Indexer
from llmos.syscalls.services import Record


def _records(*ids: str) -> list[Record]:
    return [Record(id=i, collection="archival", text=i) for i in ids]


def test_batches_in_order_and_flush_waits() -> None:
    gate = threading.Event()
    seen: list[list[str]] = []

    def index(batch: Sequence[Record]) -> None:
        gate.wait(10)
        seen.append([r.id for r in batch])

    indexer = Indexer(index, lambda exc: None)
    indexer.submit(_records("a1"))
    indexer.submit(_records("a2", "a3"))
    indexer.submit(_records("a4"))
    assert indexer.pending == 4
    assert indexer.flush(timeout=0.05) is False  # still held at the gate
    gate.set()
    assert indexer.flush(timeout=10)
    assert indexer.pending == 0
    assert [i for batch in seen for i in batch] == ["a1", "a2", "a3", "a4"]
    assert len(seen) <= 3  # records queued while it was busy went in one batch
    assert indexer.stop(timeout=10)


def test_a_failure_is_reported_and_the_worker_goes_on() -> None:
    failures: list[str] = []
    done: list[str] = []

    def index(batch: Sequence[Record]) -> None:
        if batch[0].id == "bad":
            raise RuntimeError("index down")
        done.extend(r.id for r in batch)

    indexer = Indexer(index, lambda exc: failures.append(str(exc)))
    indexer.submit(_records("bad"))
    assert indexer.flush(timeout=10)
    indexer.submit(_records("a2"))
    assert indexer.flush(timeout=10)
    assert failures == ["index down"] and done == ["a2"]
    indexer.stop(timeout=10)


def test_stop_finishes_the_queue_then_refuses_more() -> None:
    done: list[str] = []
    indexer = Indexer(lambda batch: done.extend(r.id for r in batch), lambda exc: None)
    assert indexer.stop(timeout=1)  # never started: nothing to wait for
    indexer = Indexer(lambda batch: done.extend(r.id for r in batch), lambda exc: None)
    indexer.submit(_records("a1", "a2"))
    assert indexer.stop(timeout=10)
    assert done == ["a1", "a2"]
    indexer.submit(_records("a3"))
    assert indexer.flush(timeout=1) and done == ["a1", "a2"]
