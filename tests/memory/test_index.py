"""The Chroma index: our vectors only, cosine space, health probes, local and server clients."""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmos.memory.index as index_module
from llmos.errors import ErrorCode, LlmosError
from llmos.memory.index import (
    Expected,
    Health,
    MemoryIndex,
    collection_name,
    probe_in_subprocess,
)


def _vectors(n: int, dim: int = 8, seed: int = 1) -> list[list[float]]:
    rnd = random.Random(seed)
    return [[rnd.uniform(-1, 1) for _ in range(dim)] for _ in range(n)]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[MemoryIndex]:
    idx = MemoryIndex(namespace="t1", path=tmp_path / "chroma")
    yield idx
    idx.close()


def _fill(index: MemoryIndex, n: int) -> list[list[float]]:
    vectors = _vectors(n)
    ids = [f"a{i}" for i in range(n)]
    metas = [{"collection": "archival", "tag:even": i % 2 == 0} for i in range(n)]
    index.upsert("archival", ids, vectors, metas)
    return vectors


def _expected(n: int, vectors: list[list[float]]) -> dict[str, Expected]:
    return {
        "archival": Expected(
            count=n, recent=[f"a{n - 1}"], probe_id=f"a{n - 1}", probe_vector=vectors[-1]
        ),
        "recall": Expected(count=0),
    }


def test_query_is_cosine_and_filters(index: MemoryIndex) -> None:
    index.upsert(
        "archival",
        ["x", "y", "z"],
        [[1.0, 0.0], [10.0, 0.5], [0.0, 1.0]],
        [{"tag:a": True}, {"tag:b": True}, {"tag:a": True}],
    )
    hits = index.query("archival", [2.0, 0.0], 3)
    assert [i for i, _ in hits] == ["x", "y", "z"]
    assert hits[0][1] == pytest.approx(0.0, abs=1e-5)  # direction, not length: cosine
    assert hits[2][1] == pytest.approx(1.0, abs=1e-5)
    assert [i for i, _ in index.query("archival", [2.0, 0.0], 3, {"tag:a": True})] == ["x", "z"]
    index.delete("archival", ["x", "never-there"])
    assert index.count("archival") == 2
    assert index.query("recall", [1.0, 0.0], 5) == []


def test_large_upserts_are_batched(index: MemoryIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = _fill(index, 2500)
    assert index.count("archival") == 2500
    monkeypatch.setattr(index_module, "ID_PAGE", 1000)  # ids are read in three pages
    assert index.ids("archival") == {f"a{i}" for i in range(2500)}
    assert index.ids("recall") == set()
    assert index.check(_expected(2500, vectors)).health is Health.OK


def test_check_finds_stale_and_missing(index: MemoryIndex) -> None:
    vectors = _fill(index, 20)
    assert index.check(_expected(21, vectors)).health is Health.STALE
    index.delete("archival", ["a19"])
    index.upsert("archival", ["extra"], [vectors[0]], [{"collection": "archival"}])
    result = index.check(_expected(20, vectors))
    assert result.health is Health.STALE and "a19" in result.reason
    index.reset()
    assert index.check({"archival": Expected(count=0)}).health is Health.OK
    other = MemoryIndex(namespace="t2", path=index.path)
    try:
        assert other.check(_expected(20, vectors)).health is Health.MISSING
    finally:
        other.close()


def test_probe_in_a_subprocess(index: MemoryIndex) -> None:
    vectors = _fill(index, 50)
    index.close()
    assert index.path is not None
    assert probe_in_subprocess(index.path, "t1", _expected(50, vectors)).health is Health.OK
    stale = probe_in_subprocess(index.path, "t1", _expected(51, vectors))
    assert stale.health is Health.STALE and "50 indexed, 51 stored" in stale.reason


def test_probe_survives_an_index_that_crashes_chroma(index: MemoryIndex) -> None:
    """A segment truncated by a killed flush (chroma-core/chroma 7238) crashes whoever opens
    it; the probe takes that crash in a child and reports damage."""
    vectors = _fill(index, 2500)  # enough that Chroma writes HNSW segment files
    index.close()
    assert index.path is not None
    segments = glob.glob(str(index.path / "*" / "*.bin"))
    assert segments
    for name in segments:
        os.truncate(name, os.path.getsize(name) // 3)
    result = probe_in_subprocess(index.path, "t1", _expected(2500, vectors))
    assert result.health is Health.DAMAGED
    index.wipe()
    assert not index.exists()


def test_probe_reports_an_unreadable_index(index: MemoryIndex) -> None:
    _fill(index, 3)
    index.close()
    assert index.path is not None
    with open(index.path / "chroma.sqlite3", "r+b") as fh:
        fh.write(b"garbage!" * 64)
    result = probe_in_subprocess(index.path, "t1", {"archival": Expected(count=3)})
    assert result.health is Health.DAMAGED
    assert "failed" in result.reason


def test_names_keep_installations_apart() -> None:
    assert collection_name("abc", "archival") != collection_name("abd", "archival")
    with pytest.raises(ValueError):
        MemoryIndex(namespace="x")
    bad = MemoryIndex(namespace="x", server="ftp://host")
    with pytest.raises(LlmosError) as err:
        bad.count("archival")
    assert err.value.code == ErrorCode.E_INVAL


def test_server_index_same_code(chroma_server: str) -> None:
    index = MemoryIndex(namespace="srv", server=chroma_server)
    assert index.local is False and index.exists()
    try:
        vectors = _fill(index, 30)
        assert index.count("archival") == 30
        assert index.query("archival", vectors[4], 1)[0][0] == "a4"
        assert index.check(_expected(30, vectors)).health is Health.OK
        index.reset()
        assert index.count("archival") == 0
    finally:
        index.close()


def test_unreachable_server_is_a_backend_error(unused_port: int) -> None:
    index = MemoryIndex(namespace="srv", server=f"http://127.0.0.1:{unused_port}")
    with pytest.raises(LlmosError) as err:
        index.count("archival")
    assert err.value.code == ErrorCode.E_BACKEND
