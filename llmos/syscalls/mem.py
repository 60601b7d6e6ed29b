"""The mem family: remember facts, search long-term memory, forget; each within the memory
scopes the calling process was granted.

Scopes work like fs paths. A memory lies in `mem:<collection>/<tag>` for each of its tags, or
in `mem:<collection>` when untagged (collections: `archival` for facts, `recall` for paged-out
conversation). A capability scoped `mem:archival/recipes` lets an app store and find memories
tagged `recipes` and nothing else; an unscoped one covers all memory. A process sees a memory
only when one capability covers all of the memory's scopes: what it may store, it may read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import MAX_MEM_SEARCH_K, MAX_MEM_TEXT_CHARS
from llmos.syscalls.base import Quiet, Registrar, Syscall
from llmos.syscalls.context import Authorized, Process
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.services import (
    Allow,
    Collection,
    Hit,
    Memories,
    Record,
    normalize_tags,
    recallable,
)

RESOURCE_PREFIX = "mem:"


def record_resources(collection: Collection, tags: Iterable[str]) -> list[str]:
    """The capability resources a memory lies in: one per tag, or the bare collection."""
    base = f"{RESOURCE_PREFIX}{collection}"
    return [f"{base}/{tag}" for tag in tags] or [base]


def _tags(value: list[str] | None) -> list[str] | None:
    """Tags as the store keeps them; a bad tag is a validation error (E_INVAL)."""
    if value is None:
        return None
    try:
        return list(normalize_tags(value))
    except LlmosError as exc:
        raise ValueError(exc.message) from None


class MemStore(Syscall):
    """Remember a fact for later (kept in long-term memory until forgotten)."""

    effects = frozenset({"remember"})
    call: Literal["mem.store"] = "mem.store"
    text: str = Field(min_length=1, description="The fact to remember, as one full sentence.")
    tags: list[str] | None = Field(
        default=None, description='Labels to file it under, e.g. ["work"].'
    )

    _check_tags = field_validator("tags")(_tags)


class MemStoreResult(BaseModel):
    """Where the fact was kept."""

    id: str
    tags: list[str]
    stored: str


class MemSearch(Syscall):
    """Search long-term memory (kept facts and earlier conversation) by meaning."""

    needs_recall = True
    call: Literal["mem.search"] = "mem.search"
    query: str = Field(min_length=1, description="What to look for, in plain words.")
    k: int = Field(default=5, ge=1, le=MAX_MEM_SEARCH_K, description="Most hits to return.")
    tags: list[str] | None = Field(
        default=None, description="Only memories with all of these tags."
    )

    _check_tags = field_validator("tags")(_tags)


SAME_AS = "same_as"
"""Meta key of a kept fact stored again (llmos.consolidate): the id of the first one."""
REPLACED_BY = "replaced_by"
"""Meta key of a kept fact a later one contradicts (llmos.consolidate): the later one's id."""


class MemRecord(Quiet):
    """One memory as a caller sees it; `replaced_by` names a later memory that says otherwise
    (found while idle, llmos.consolidate), and is left out when there is none."""

    quiet: ClassVar[frozenset[str]] = frozenset({"replaced_by"})

    id: str
    text: str
    tags: list[str]
    stored: str
    collection: str
    replaced_by: str | None = None


class MemHit(MemRecord):
    """A memory found by a search, with its similarity to the query (1 is identical)."""

    score: float


class MemSearchResult(BaseModel):
    """Memories nearest in meaning, best first."""

    hits: list[MemHit]
    note: str | None = None
    """Said when the tags asked for held nothing and the hits are from every memory."""


class MemForget(Syscall):
    """Forget memories: one by id, or every one matching a query."""

    one_of = ("id", "query")
    changes_files = True
    effects = frozenset({"forget"})

    call: Literal["mem.forget"] = "mem.forget"
    id: str | None = Field(default=None, description="The id of one memory (from mem.search).")
    query: str | None = Field(default=None, description="Forget all memories about this.")

    @model_validator(mode="after")
    def _one_target(self) -> MemForget:
        if (self.id is None) == (self.query is None):
            raise ValueError("give either id or query")
        if self.query is not None and not self.query.strip():
            raise ValueError("query is empty")
        return self


class MemForgetResult(BaseModel):
    """What was forgotten."""

    forgotten: list[MemRecord]


def _stored(created: float) -> str:
    """When a memory was stored, in local time, as a person (or model) reads it."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created))


def _as_record(record: Record) -> MemRecord:
    return MemRecord(
        id=record.id,
        text=record.text,
        tags=list(record.tags),
        stored=_stored(record.created),
        collection=record.collection,
        replaced_by=str(record.meta[REPLACED_BY]) if record.meta.get(REPLACED_BY) else None,
    )


def _as_hit(hit: Hit) -> MemHit:
    return MemHit(**_as_record(hit.record).model_dump(), score=hit.score)


def _memory(process: Process) -> Memories:
    """The memory the process was spawned with, or E_NOSYS."""
    memory = process.services.get(Memories)
    if memory is None:
        raise LlmosError(ErrorCode.E_NOSYS, f"process {process.name!r} has no memory attached")
    return memory


def _allow(process: Process, call: str) -> Allow | None:
    """Which memories `call` may touch for this process, as the dispatcher authorized it:
    None (no filter) when it is allowed on everything, else a per-memory check."""
    auth = _authorized(process)
    if auth.unscoped(call):
        return None

    def allow(record: Record) -> bool:
        return auth.covers(record_resources(record.collection, record.tags), call)

    return allow


def _authorized(process: Process) -> Authorized:
    """What the dispatch path allowed the running call (outside one, the held capabilities:
    the pager recalls with no call running)."""
    if process.authorized is not None:
        return process.authorized
    return Authorized(process.caps, "")


def search_filter(process: Process) -> Allow | None:
    """Which memories a mem.search by this process may find (None: all of them)."""
    return _allow(process, "mem.search")


def _both(first: Allow | None, second: Allow | None) -> Allow | None:
    """A filter passing what both filters pass."""
    if first is None or second is None:
        return first or second
    return lambda record: first(record) and second(record)


def mem_store(call: MemStore, process: Process) -> MemStoreResult:
    """Store the fact durably, then index it."""
    if len(call.text) > MAX_MEM_TEXT_CHARS:
        raise LlmosError(
            ErrorCode.E_TOOBIG,
            f"a memory holds at most {MAX_MEM_TEXT_CHARS} characters, not {len(call.text)}",
        )
    record = _memory(process).store(
        call.text, tags=call.tags or (), meta={"process": process.name, "source": "mem.store"}
    )
    return MemStoreResult(id=record.id, tags=list(record.tags), stored=_stored(record.created))


def mem_search(call: MemSearch, process: Process) -> MemSearchResult:
    """Search only the memories this process may see (not earlier answers: `recallable`)."""
    memory = _memory(process)
    allow = _both(_allow(process, "mem.search"), recallable)
    hits = memory.search(call.query, k=call.k, tags=call.tags or (), allow=allow)
    note = None
    if not hits and call.tags:
        # A tag the person never gave (the model's guess, "work") must not hide the fact they
        # told: search every memory this process may see, and say so.
        hits = memory.search(call.query, k=call.k, allow=allow)
        if hits:
            note = f"nothing is tagged {', '.join(call.tags)}; these are from all memories"
    found = {h.id for h in hits}
    # A fact stored twice shows once: the copy goes where the first is found too.
    shown = [h for h in hits if h.record.meta.get(SAME_AS) not in found]
    return MemSearchResult(hits=[_as_hit(h) for h in shown], note=note)


def _matching(call: MemForget, process: Process, allow: Allow | None) -> list[Hit]:
    assert call.query is not None
    return _memory(process).forget_matching(call.query, allow=allow)


def mem_forget(call: MemForget, process: Process) -> MemForgetResult:
    """Forget one memory, or all that match the query and that this process may forget."""
    memory = _memory(process)
    if call.id is not None:
        gone = memory.forget([call.id])
        if not gone:
            raise LlmosError(ErrorCode.E_NOENT, f"no memory {call.id!r}")
        return MemForgetResult(forgotten=[_as_record(r) for r in gone])
    allow = _both(_allow(process, "mem.search"), _allow(process, "mem.forget"))
    hits = _matching(call, process, allow)
    gone = memory.forget(h.id for h in hits)
    return MemForgetResult(forgotten=[_as_record(r) for r in gone])


def _store_resources(call: MemStore, process: Process) -> list[str]:
    return record_resources("archival", call.tags or ())


def _search_resources(call: MemSearch, process: Process) -> list[str]:
    """A tagged search names its scopes; an untagged one needs only some mem.search grant and
    then sees what that grant covers."""
    return record_resources("archival", call.tags) if call.tags else []


def _forget_resources(call: MemForget, process: Process) -> list[str]:
    """The scopes of every memory that would go: forgetting needs mem.forget on all of them.
    Memories the process cannot see are not there for it (E_NOENT), never a hint of them; a
    process with no mem.forget grant at all is refused (E_PERM) before anything is looked up."""
    if not _authorized(process).any_grant("mem.forget"):
        return []
    search_allow = _allow(process, "mem.search")
    if call.id is not None:
        found = _memory(process).get([call.id])
        if not found or (search_allow is not None and not search_allow(found[0])):
            raise LlmosError(ErrorCode.E_NOENT, f"no memory {call.id!r}")
        return record_resources(found[0].collection, found[0].tags)
    resources: dict[str, None] = {}
    for hit in _matching(call, process, search_allow):
        resources.update(dict.fromkeys(record_resources(hit.record.collection, hit.record.tags)))
    return list(resources)


@hookimpl
def register_syscalls(register: Registrar) -> None:
    """Register the mem family (most used first)."""
    register(MemSearch, mem_search, result=MemSearchResult, resources=_search_resources)
    register(MemStore, mem_store, result=MemStoreResult, resources=_store_resources)
    register(MemForget, mem_forget, result=MemForgetResult, resources=_forget_resources)
