"""What the families ask of the services a process is offered (memory, the search of a
workspace's files by meaning), as data types and protocols in the syscall ABI: a family names
the protocol, the system offers the implementation (`llmos.memory`), and no family imports
the layer above it.

The memory records (`Record`, `Hit`) and file hits (`FileHit`, `FileSearchResult`) live here
because both sides speak them; `normalize_tags` too, since a tag is part of a capability
resource (`mem:archival/<tag>`) as well as a record's label."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import MAX_MEM_TAGS

Collection = Literal["archival", "recall"]
"""archival: facts the person asked to keep; recall: conversation paged out of the context."""

MetaValue = str | int | float | bool
"""Metadata values are JSON scalars (process, session, turn_start, turn_end, source...)."""


@dataclass(frozen=True)
class Record:
    """One stored memory: a fact (archival) or a page of conversation (recall)."""

    id: str
    collection: Collection
    text: str
    tags: tuple[str, ...] = ()
    meta: Mapping[str, MetaValue] = field(default_factory=dict)
    created: float = 0.0


Allow = Callable[[Record], bool]
"""A filter on what a caller may see (the mem syscalls pass the process's capability check)."""


@dataclass(frozen=True)
class Hit:
    """One search result: the stored record and its cosine similarity to the query."""

    record: Record
    score: float

    @property
    def id(self) -> str:
        """The record's id."""
        return self.record.id

    @property
    def text(self) -> str:
        """The record's text."""
        return self.record.text


@dataclass(frozen=True)
class FileHit:
    """One chunk found: where it is, its text (cut), its fused score and its cosine similarity."""

    path: str
    """Workspace-relative, as fs.read takes it."""
    start_line: int
    """First line of the chunk, counted from 1."""
    end_line: int
    """Last line of the chunk (inclusive)."""
    text: str
    score: float
    """Reciprocal rank fusion of the embedding and word rankings: higher is better, and it
    compares hits of one search only."""
    similarity: float
    """Cosine similarity of the chunk to the query (-1 to 1; about 0.3 and up is related)."""


@dataclass(frozen=True)
class ScanReport:
    """What bringing the index up to date found, within the scanned folder."""

    files: int
    """Text files indexed."""
    chunks: int
    """Chunks those files make."""
    read: int
    """Files read this time (new, changed, or modified too recently to trust their stat)."""
    embedded: int
    """Chunks embedded this time (the others' vectors were kept)."""
    removed: int
    """Files dropped from the index: deleted, no longer readable, or now too big."""
    skipped: int
    """Files left out: binary, not UTF-8, too big, unreadable or vanished while scanned."""
    waiting: int
    """Changed or new files the time budget left for the next refresh."""
    truncated: bool
    """Whether a limit or the time budget left files out (`note` says which)."""
    note: str = ""


@dataclass(frozen=True)
class FileSearchResult:
    """Hits best first, and what the scan before the search did."""

    query: str
    hits: list[FileHit]
    scan: ScanReport


@runtime_checkable
class Memories(Protocol):
    """What the mem family needs of memory (`llmos.memory.memory.Memory` is it): store a
    fact, search, read records back, and forget them."""

    def store(
        self,
        text: str,
        *,
        tags: Iterable[str] = ...,
        collection: Collection = ...,
        meta: Mapping[str, MetaValue] | None = ...,
    ) -> Record: ...

    def get(self, ids: Sequence[str]) -> list[Record]: ...

    def search(
        self, query: str, *, k: int = ..., tags: Iterable[str] = ..., allow: Allow | None = ...
    ) -> list[Hit]: ...

    def forget(self, ids: Iterable[str]) -> list[Record]: ...

    def forget_matching(self, query: str, *, allow: Allow | None = ...) -> list[Hit]: ...


@runtime_checkable
class FilesByMeaning(Protocol):
    """What fs.search needs of a workspace's search by meaning (`llmos.memory.files.FileIndex`
    is one): passages nearest in meaning to a query, within a folder, indexing for at most
    `budget_s` seconds first."""

    def search(
        self, query: str, k: int = ..., path: str = ..., budget_s: float | None = ...
    ) -> FileSearchResult: ...


TAG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags lower-cased, spaces as dashes, duplicates dropped; E_INVAL for anything else.

    A tag becomes part of a capability resource (`mem:archival/<tag>`), so it may hold no `/`,
    no glob characters and nothing a scope check could misread.
    """
    out: list[str] = []
    for raw in tags:
        tag = "-".join(raw.strip().lower().split())
        if not TAG_RE.fullmatch(tag):
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"bad tag {raw!r}: use letters, digits, '-', '_' or '.' (at most 40)",
            )
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_MEM_TAGS:
        raise LlmosError(ErrorCode.E_INVAL, f"at most {MAX_MEM_TAGS} tags, not {len(out)}")
    return tuple(out)


ANSWERED_KEY = "answered"
"""A recall page's meta key: True when its turn was a question answered from memory alone."""


def recallable(record: Record) -> bool:
    """Whether a memory is found for a request: not the page of a question answered from
    memory (it holds no fact of the person's, only memory said again, and the model's
    guesses; the records it came from are found instead)."""
    return record.meta.get(ANSWERED_KEY) is not True
