"""Background indexing: records are durable once committed, so embedding and indexing them can
happen after the store returns, in batches, on one worker thread.

This keeps a `mem.store` or a page-out down to one SQLite commit, and turns many small index
writes (each costing Chroma a log write) into a few large ones. Readers call `flush()` first so
they never miss a record this process stored.

The worker starts a moment after the first record arrives (unless someone flushes): the pager
pages in right after it pages out, and a page-in's query waits for the embedding model while
the worker embeds the pages that went out (a tenth of a second a page on two cores).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from llmos.syscalls.services import Record

log = logging.getLogger(__name__)

IndexBatch = Callable[[Sequence[Record]], None]

START_DELAY_S = 0.25
"""How long the worker lets a new queue wait, so a search just after a store embeds first."""


class Indexer:
    """A queue of stored records and the worker thread that indexes them, oldest first."""

    def __init__(
        self,
        index_batch: IndexBatch,
        on_failure: Callable[[Exception], None],
        *,
        start_delay: float = START_DELAY_S,
    ) -> None:
        self._index_batch = index_batch
        self._on_failure = on_failure
        self._start_delay = start_delay
        self._queue: list[Record] = []
        self._in_flight = 0
        self._flushing = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, records: Sequence[Record]) -> None:
        """Queue records for indexing (starting the worker on first use)."""
        with self._cond:
            if self._stopping:
                return
            self._queue.extend(records)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llmos-memory-indexer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Records queued or being indexed."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is indexed (or failed); False on time-out."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout)
            finally:
                self._flushing -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    return
                self._cond.wait_for(lambda: self._stopping or self._flushing, self._start_delay)
                batch, self._queue = self._queue, []
                self._in_flight = len(batch)
            try:
                self._index_batch(batch)
            except Exception as exc:
                # The records are safe in the store; the index is rebuilt before its next use.
                log.warning("indexing %d memories failed: %s", len(batch), exc)
                self._on_failure(exc)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> bool:
        """Index what is queued, then end the worker; False if it did not finish in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
