"""The memory index: Chroma over the SQLite store, never the system of record.

A local `PersistentClient` under LLMOS_HOME/memory/chroma by default, a Chroma server
(`HttpClient`) when `memory_server` is set; the same code drives both. Chroma's local store is
not safe against `kill -9` (chroma-core/chroma 7238, 7678, 7040), so its health is probed in a
subprocess (a damaged segment can crash the process that opens it) and the index is rebuilt
from the store whenever it is missing, stale or damaged.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmos.errors import ErrorCode, LlmosError
from llmos.imports import heavy
from llmos.limits import MEM_PROBE_TIMEOUT_S
from llmos.memory.store import COLLECTIONS
from llmos.syscalls.services import Collection

INDEX_DIR = "chroma"
SPACE = "cosine"
MAX_BATCH = 1000
ID_PAGE = 10000
SELF_MATCH_DISTANCE = 1e-3

Where = dict[str, Any]


class Health(StrEnum):
    """What a health probe found."""

    OK = "ok"
    MISSING = "missing"
    STALE = "stale"
    DAMAGED = "damaged"


@dataclass(frozen=True)
class ProbeResult:
    """A probe's verdict and why."""

    health: Health
    reason: str = ""


@dataclass(frozen=True)
class Expected:
    """What the store says one collection of the index must hold."""

    count: int
    recent: list[str] = field(default_factory=list)
    probe_id: str | None = None
    probe_vector: list[float] | None = None


def collection_name(namespace: str, collection: Collection) -> str:
    """The Chroma collection for one store's collection (the store id keeps installations that
    share a Chroma server apart)."""
    return f"llmos-{namespace}-{collection}"


@contextlib.contextmanager
def _chroma_errors(what: str) -> Iterator[None]:
    """Chroma's own exceptions, as a typed E_BACKEND error saying what failed."""
    try:
        yield
    except LlmosError:
        raise
    except Exception as exc:
        raise LlmosError(ErrorCode.E_BACKEND, f"memory index: {what} failed: {exc}") from exc


class MemoryIndex:
    """Vectors and filterable metadata of stored records in Chroma, one collection per kind."""

    def __init__(
        self,
        *,
        namespace: str,
        path: Path | None = None,
        server: str | None = None,
        in_memory: bool = False,
    ) -> None:
        if (path is not None) + (server is not None) + in_memory != 1:
            raise ValueError("give exactly one of path, server (Chroma URL) or in_memory")
        self.namespace = namespace
        self.path = path
        self.server = server
        self.in_memory = in_memory
        """Held in this process only (memory_encrypt), rebuilt from the store when opened."""
        self._client: Any = None
        self._collections: dict[str, Any] = {}

    @property
    def local(self) -> bool:
        """True for an index of ours (a folder, or this process's memory), False for a server."""
        return self.server is None

    def exists(self) -> bool:
        """False when a local index has never been built (or was wiped)."""
        if self.in_memory:
            return self._client is not None
        return self.path is None or self.path.exists()

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        chromadb = heavy("chromadb")
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        if self.in_memory:
            with _chroma_errors("opening an index in memory"):
                self._client = chromadb.EphemeralClient(settings=chroma_settings)
        elif self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            with _chroma_errors(f"opening {self.path}"):
                self._client = chromadb.PersistentClient(
                    path=str(self.path), settings=chroma_settings
                )
        else:
            assert self.server is not None
            url = urlparse(self.server)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise LlmosError(
                    ErrorCode.E_INVAL, f"memory_server must be http(s)://host[:port], not {url!r}"
                )
            ssl = url.scheme == "https"
            with _chroma_errors(f"connecting to the Chroma server {self.server}"):
                self._client = chromadb.HttpClient(
                    host=url.hostname,
                    port=url.port or (443 if ssl else 8000),
                    ssl=ssl,
                    settings=chroma_settings,
                )
        return self._client

    def _collection(self, collection: Collection) -> Any:
        found = self._collections.get(collection)
        if found is None:
            client = self._connect()
            with _chroma_errors(f"opening collection {collection}"):
                # embedding_function=None: we always pass our own vectors, so Chroma must never
                # fetch its default model (an ONNX download).
                found = client.get_or_create_collection(
                    collection_name(self.namespace, collection),
                    embedding_function=None,
                    configuration={"hnsw": {"space": SPACE}},
                )
            self._collections[collection] = found
        return found

    def upsert(
        self,
        collection: Collection,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        metadatas: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add or replace entries, in batches Chroma accepts."""
        col = self._collection(collection)
        with _chroma_errors(f"indexing {len(ids)} records"):
            for start in range(0, len(ids), MAX_BATCH):
                end = start + MAX_BATCH
                col.upsert(
                    ids=list(ids[start:end]),
                    embeddings=[list(v) for v in vectors[start:end]],
                    metadatas=[dict(m) for m in metadatas[start:end]],
                )

    def delete(self, collection: Collection, ids: Sequence[str]) -> None:
        """Remove entries (ids not indexed are ignored)."""
        if ids:
            with _chroma_errors(f"removing {len(ids)} records"):
                self._collection(collection).delete(ids=list(ids))

    def query(
        self, collection: Collection, vector: Sequence[float], n: int, where: Where | None = None
    ) -> list[tuple[str, float]]:
        """The `n` nearest entries as (id, cosine distance), nearest first."""
        col = self._collection(collection)
        with _chroma_errors("searching"):
            found = col.query(
                query_embeddings=[list(vector)],
                n_results=n,
                where=where or None,
                include=["distances"],
            )
        ids: list[str] = found["ids"][0]
        distances: list[float] = (found.get("distances") or [[]])[0]
        return list(zip(ids, distances, strict=True))

    def ids(self, collection: Collection) -> set[str]:
        """Every id one collection holds (read in pages)."""
        col = self._collection(collection)
        found: set[str] = set()
        offset = 0
        with _chroma_errors("listing ids"):
            while True:
                page = col.get(include=[], limit=ID_PAGE, offset=offset)["ids"]
                found.update(page)
                offset += len(page)
                if len(page) < ID_PAGE:
                    return found

    def count(self, collection: Collection) -> int:
        """How many entries one collection holds."""
        with _chroma_errors("counting"):
            return int(self._collection(collection).count())

    def reset(self) -> None:
        """Drop both collections and create them empty (the start of a rebuild)."""
        client = self._connect()
        self._collections.clear()
        for collection in COLLECTIONS:
            with contextlib.suppress(Exception):
                client.delete_collection(collection_name(self.namespace, collection))
            self._collection(collection)

    def check(self, expected: Mapping[Collection, Expected]) -> ProbeResult:
        """Compare the index with what the store holds: counts, the newest ids, and a query
        that must find a stored vector as its own nearest neighbour."""
        client = self._connect()
        for collection, want in expected.items():
            name = collection_name(self.namespace, collection)
            try:
                col = client.get_collection(name, embedding_function=None)
            except Exception:
                if want.count == 0:
                    continue
                return ProbeResult(Health.MISSING, f"collection {name} is missing")
            try:
                have = int(col.count())
                if have != want.count:
                    return ProbeResult(
                        Health.STALE, f"{collection}: {have} indexed, {want.count} stored"
                    )
                if want.recent:
                    got = set(col.get(ids=list(want.recent), include=[])["ids"])
                    lost = [i for i in want.recent if i not in got]
                    if lost:
                        return ProbeResult(Health.STALE, f"{collection}: {lost} not indexed")
                if want.probe_vector is not None:
                    hit = col.query(
                        query_embeddings=[want.probe_vector], n_results=1, include=["distances"]
                    )
                    distances = (hit.get("distances") or [[]])[0]
                    if not distances or distances[0] > SELF_MATCH_DISTANCE:
                        return ProbeResult(
                            Health.DAMAGED, f"{collection}: a query misses {want.probe_id}"
                        )
            except Exception as exc:
                return ProbeResult(Health.DAMAGED, f"{collection}: {type(exc).__name__}: {exc}")
        return ProbeResult(Health.OK)

    def close(self) -> None:
        """Release the client (a local one stops its Chroma system)."""
        client, self._client = self._client, None
        self._collections.clear()
        if client is not None and hasattr(client, "close"):
            with contextlib.suppress(Exception):
                client.close()

    def wipe(self) -> None:
        """Delete a local index folder outright (for damage a reset cannot be trusted with)."""
        self.close()
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path)


def probe_in_subprocess(
    path: Path,
    namespace: str,
    expected: Mapping[Collection, Expected],
    timeout: float = MEM_PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Run `MemoryIndex.check` on a local index in a child process, so that a damaged index
    that crashes or hangs Chroma costs a child, not this process; either counts as damage."""
    request = {
        "path": str(path),
        "namespace": namespace,
        "expected": {k: asdict(v) for k, v in expected.items()},
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "llmos.memory.index", "probe"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(Health.DAMAGED, f"the index probe hung for more than {timeout:.0f} s")
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return ProbeResult(Health.DAMAGED, f"the index probe crashed ({name}) opening the index")
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return ProbeResult(
            Health.DAMAGED, f"the index probe failed (status {done.returncode}): {tail[0]}"
        )
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        return ProbeResult(Health(answer["health"]), str(answer.get("reason", "")))
    except (ValueError, KeyError, IndexError, TypeError):
        return ProbeResult(Health.DAMAGED, f"the index probe answered {done.stdout[-200:]!r}")


def _probe_main() -> int:
    """The child side of `probe_in_subprocess`: read the request on stdin, print the verdict."""
    request = json.loads(sys.stdin.read())
    expected = {k: Expected(**v) for k, v in request["expected"].items()}
    index = MemoryIndex(namespace=request["namespace"], path=Path(request["path"]))
    try:
        result = index.check(expected)
    finally:
        index.close()
    print(json.dumps({"health": result.health.value, "reason": result.reason}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["probe"]:
        sys.exit("usage: python -m llmos.memory.index probe < request.json")
    sys.exit(_probe_main())
