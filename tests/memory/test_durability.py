"""Durability: every mem.store that returned ok survives `kill -9` of the process right after."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import llmos.memory
from llmos.config import Settings
from llmos.memory.embedder import Embedder
from llmos.memory.index import Health
from llmos.memory.store import DB_FILE
from llmos.system import System

BURST = """
import sys
from pathlib import Path
from llmos.config import Settings
from llmos.system import System

system = System(Settings(home=Path(sys.argv[1])), plugins=False)
proc = system.spawn("burst", Path(sys.argv[2]))
# Start with the model loaded and the index built, so the kill lands while the background
# indexer is busy with the burst, not before it began.
assert system.dispatch(proc, {"call": "mem.store", "text": "warm-up"}).ok
system.memory.flush()
print("ready", flush=True)
i = 0
while True:
    text = f"fact {i}: the locker code for box {i} is {i * 7919 % 10000:04d}"
    result = system.dispatch(proc, {"call": "mem.store", "text": text, "tags": ["burst"]})
    assert result.ok, result.message
    print(result.value["id"], i, flush=True)  # the acknowledgement
    i += 1
"""


def _text(i: int) -> str:
    return f"fact {i}: the locker code for box {i} is {i * 7919 % 10000:04d}"


def test_acknowledged_stores_survive_kill_9(
    llmos_home: Path, workspace: Path, tmp_path: Path, embedder: Embedder
) -> None:
    errors = tmp_path / "burst.err"
    with errors.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", BURST, str(llmos_home), str(workspace)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert child.stdout is not None
    acked: dict[str, int] = {}
    try:
        assert child.stdout.readline().strip() == "ready", errors.read_text()
        wanted = 60 + random.randrange(40)
        while len(acked) < wanted:
            line = child.stdout.readline()
            assert line, f"the burst died early: {errors.read_text()}"
            record_id, i = line.split()
            acked[record_id] = int(i)
        os.kill(child.pid, signal.SIGKILL)  # mid-burst: a store may be half done
        for line in child.stdout:  # printed before the kill: acknowledged too
            if len(line.split()) == 2:
                record_id, i = line.split()
                acked[record_id] = int(i)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    db = sqlite3.connect(llmos_home / "memory" / DB_FILE)
    state = db.execute("SELECT value FROM meta WHERE key = 'index_state'").fetchone()
    db.close()
    assert state == ("dirty",)  # no clean close: the next open must not trust the index

    settings = Settings(home=llmos_home)
    with System(settings, plugins=False) as system:
        memory = system.memory
        kept = {r.id: r for r in memory.db.get_many(list(acked))}
        assert sorted(kept) == sorted(acked), "an acknowledged store was lost"
        for record_id, i in acked.items():
            assert kept[record_id].text == _text(i)
            assert kept[record_id].tags == ("burst",)
        # The warm-up record, and perhaps one stored but killed before it was acknowledged.
        assert memory.db.count() - 1 in (len(acked), len(acked) + 1)

        last = max(acked.items(), key=lambda item: item[1])
        for record_id, i in [last, *random.sample(sorted(acked.items()), 4)]:
            hits = memory.search(_text(i), k=1, tags=["burst"])
            assert [h.id for h in hits] == [record_id]
            assert hits[0].score > 0.99
        # The index was not closed cleanly, so it was probed in a subprocess (and rebuilt if
        # it lagged the store); either way it now agrees with the store.
        assert memory.last_probe is not None
        assert memory.index.count("archival") == memory.db.count()
        assert memory.health().health is Health.OK
        stored = memory.db.count()

    assert llmos.memory.reindex(settings) == stored
