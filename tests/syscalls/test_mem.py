"""The mem family through the one dispatch path: store, search, forget, and memory scopes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmos.errors import ErrorCode
from llmos.kernel.prompt import render_table
from llmos.limits import MAX_MEM_TEXT_CHARS
from llmos.security.capabilities import CapabilitySet, GrantAnswer, GrantRequest
from llmos.security.workspace import Workspace
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.syscalls.mem import record_resources
from llmos.system import System


def _ok(system: System, proc: Process, **call: Any) -> dict[str, Any]:
    result = system.dispatch(proc, call)
    assert result.ok, result.message
    assert isinstance(result.value, dict)
    return result.value


def _err(system: System, proc: Process, **call: Any) -> SyscallResult:
    result = system.dispatch(proc, call)
    assert not result.ok
    return result


@pytest.fixture
def shell(system: System, workspace: Path) -> Process:
    """A process with the shell's default capabilities plus mem.forget (which a shell asks
    for, as it does for fs.delete)."""
    proc = system.spawn("shell", workspace)
    proc.caps.add(system.authority.mint("mem.forget"))
    return proc


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_forgetting_is_not_a_default_capability(system: System, workspace: Path) -> None:
    """A model fooled into 'cleaning up' cannot forget what the person kept, unasked."""
    plain = system.spawn("shell", workspace)
    _ok(system, plain, call="mem.store", text="The spare key is under the blue pot")
    assert _err(system, plain, call="mem.forget", query="spare key").code == ErrorCode.E_PERM
    assert _ok(system, plain, call="mem.search", query="spare key")["hits"]


def _scoped(system: System, workspace: Path, grants: dict[str, str]) -> Process:
    """A process holding exactly these call -> scope grants."""
    proc = system.spawn("app", workspace, patterns=[])
    for call, scope in grants.items():
        proc.caps.add(system.authority.mint(call, scope=scope))
    return proc


def _seed(system: System, shell: Process) -> None:
    pancakes = "Grandma's pancakes need buttermilk"
    _ok(system, shell, call="mem.store", text=pancakes, tags=["recipes"])
    _ok(system, shell, call="mem.store", text="The bank PIN is 9931", tags=["private"])
    _ok(system, shell, call="mem.store", text="Pancake day is on Tuesday")


def test_the_family_is_registered_and_prompted(system: System) -> None:
    assert {"mem.store", "mem.search", "mem.forget"} <= set(system.registry.names())
    table = render_table(system.registry)
    assert "mem.store(text, tags?)" in table
    assert "mem.search(query, k?, tags?)" in table
    assert "mem.forget(id | query)" in table


def test_memory_opens_on_first_use(system: System, shell: Process) -> None:
    _ok(system, shell, call="fs.stat", path=".")
    assert system._memory is None
    _ok(system, shell, call="mem.store", text="x")
    assert system._memory is not None


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_store_search_forget(system: System, shell: Process) -> None:
    stored = _ok(system, shell, call="mem.store", text="My cat is called Miso", tags=["Pets"])
    assert stored["id"] == "a1" and stored["tags"] == ["pets"]
    assert len(stored["stored"]) == len("2025-01-01 12:00")
    _ok(system, shell, call="mem.store", text="The car is parked on level 3")
    found = _ok(system, shell, call="mem.search", query="what's my cat's name?", k=1)
    assert [h["id"] for h in found["hits"]] == ["a1"]
    hit = found["hits"][0]
    assert hit["text"] == "My cat is called Miso" and hit["tags"] == ["pets"]
    assert hit["collection"] == "archival" and hit["score"] > 0.5
    assert hit["stored"] == stored["stored"]
    rendered = system.dispatch(shell, {"call": "mem.search", "query": "cat"}).render()
    assert "Miso" in rendered
    gone = _ok(system, shell, call="mem.forget", id="a1")
    assert [g["text"] for g in gone["forgotten"]] == ["My cat is called Miso"]
    assert _err(system, shell, call="mem.forget", id="a1").code == ErrorCode.E_NOENT
    found = _ok(system, shell, call="mem.search", query="what's my cat's name?")
    assert [h["id"] for h in found["hits"]] == ["a2"]


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_forget_by_query_returns_what_went(system: System, shell: Process) -> None:
    _seed(system, shell)
    gone = _ok(system, shell, call="mem.forget", query="bank PIN")
    assert [g["text"] for g in gone["forgotten"]] == ["The bank PIN is 9931"]
    assert _ok(system, shell, call="mem.forget", query="volcanoes of Iceland")["forgotten"] == []
    assert system.memory.db.count() == 2


def test_no_grant_is_e_perm(system: System, workspace: Path, shell: Process) -> None:
    _seed(system, shell)
    files_only = system.spawn("files-only", workspace, patterns=["fs.*"])
    for call in (
        {"call": "mem.store", "text": "x"},
        {"call": "mem.search", "query": "pancakes"},
        {"call": "mem.forget", "query": "pancakes"},
        {"call": "mem.forget", "id": "a1"},
    ):
        result = system.dispatch(files_only, call)
        assert result.code == ErrorCode.E_PERM, call
        assert f"missing capability {call['call']}" in (result.message or "")
    assert system.memory.db.count() == 3


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_an_app_sees_only_its_scope(system: System, workspace: Path, shell: Process) -> None:
    _seed(system, shell)
    scope = "mem:archival/recipes"
    app = _scoped(system, workspace, {"mem.store": scope, "mem.search": scope})
    assert _ok(system, app, call="mem.store", text="Scones need cold butter", tags=["recipes"])
    denied = _err(system, app, call="mem.store", text="untagged")
    assert denied.code == ErrorCode.E_PERM and "mem:archival" in (denied.message or "")
    both = _err(system, app, call="mem.store", text="x", tags=["recipes", "private"])
    assert both.code == ErrorCode.E_PERM and "mem:archival/private" in (both.message or "")
    hits = _ok(system, app, call="mem.search", query="pancakes bank PIN", k=10)["hits"]
    assert sorted(h["text"] for h in hits) == [
        "Grandma's pancakes need buttermilk",
        "Scones need cold butter",
    ]
    assert _err(system, app, call="mem.search", query="PIN", tags=["private"]).code == (
        ErrorCode.E_PERM
    )
    tagged = _ok(system, app, call="mem.search", query="pancakes", tags=["recipes"], k=1)
    assert [h["id"] for h in tagged["hits"]] == ["a1"]


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_forgetting_needs_the_grant_on_everything_it_takes(
    system: System, workspace: Path, shell: Process
) -> None:
    _seed(system, shell)
    app = _scoped(system, workspace, {"mem.search": "*", "mem.forget": "mem:archival/recipes"})
    wide = _err(system, app, call="mem.forget", query="pancakes")  # also takes untagged a3
    assert wide.code == ErrorCode.E_PERM and "mem:archival" in (wide.message or "")
    assert system.memory.db.count() == 3
    assert _err(system, app, call="mem.forget", id="a2").code == ErrorCode.E_PERM
    gone = _ok(system, app, call="mem.forget", id="a1")
    assert [g["id"] for g in gone["forgotten"]] == ["a1"]
    assert system.memory.db.count() == 2


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_memories_out_of_sight_are_not_there(
    system: System, workspace: Path, shell: Process
) -> None:
    _seed(system, shell)
    scope = "mem:archival/recipes"
    app = _scoped(system, workspace, {"mem.search": scope, "mem.forget": scope})
    hidden = _err(system, app, call="mem.forget", id="a2")
    assert hidden.code == ErrorCode.E_NOENT  # not E_PERM: no hint that a2 exists
    gone = _ok(system, app, call="mem.forget", query="bank PIN and pancakes")
    assert [g["id"] for g in gone["forgotten"]] == ["a1"]
    assert system.memory.db.get("a2") is not None and system.memory.db.get("a3") is not None


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_a_denial_beats_a_grant(system: System, shell: Process) -> None:
    _seed(system, shell)
    _ok(system, shell, call="mem.store", text="Secret pancake sauce", tags=["recipes", "private"])
    shell.caps.deny("mem.search", "mem:archival/private")
    hits = _ok(system, shell, call="mem.search", query="pancakes", tags=["recipes"])["hits"]
    assert [h["id"] for h in hits] == ["a1"]  # not a4, which is private too
    # An untagged search could reach the denied scope, so the dispatch path refuses it whole.
    assert _err(system, shell, call="mem.search", query="pancakes").code == ErrorCode.E_PERM


def test_interactive_grants(system: System, workspace: Path) -> None:
    asked: list[GrantRequest] = []

    def answer(request: GrantRequest) -> GrantAnswer:
        asked.append(request)
        return GrantAnswer.ONCE if request.call == "mem.store" else GrantAnswer.DENY

    proc = system.spawn("asker", workspace, patterns=[], grant=answer)
    _ok(system, proc, call="mem.store", text="Remember the milk", tags=["shopping"])
    assert (asked[0].call, asked[0].resource) == ("mem.store", "mem:archival/shopping")
    result = _err(system, proc, call="mem.search", query="milk")
    assert result.code == ErrorCode.E_PERM and "denied by the user" in (result.message or "")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ({"call": "mem.forget"}, ErrorCode.E_INVAL),
        ({"call": "mem.forget", "id": "a1", "query": "x"}, ErrorCode.E_INVAL),
        ({"call": "mem.forget", "query": "  "}, ErrorCode.E_INVAL),
        ({"call": "mem.store", "text": ""}, ErrorCode.E_INVAL),
        ({"call": "mem.store", "text": "x", "tags": ["a/b"]}, ErrorCode.E_INVAL),
        ({"call": "mem.store", "text": "x", "tags": ["*"]}, ErrorCode.E_INVAL),
        ({"call": "mem.store", "text": "x", "tags": [str(i) for i in range(9)]}, ErrorCode.E_INVAL),
        ({"call": "mem.store", "text": "x" * (MAX_MEM_TEXT_CHARS + 1)}, ErrorCode.E_TOOBIG),
        ({"call": "mem.search", "query": "x", "k": 0}, ErrorCode.E_INVAL),
        ({"call": "mem.search", "query": "x", "k": 1000}, ErrorCode.E_INVAL),
    ],
)
def test_bad_calls_are_typed_errors(
    system: System, shell: Process, call: dict[str, Any], code: ErrorCode
) -> None:
    assert _err(system, shell, **call).code == code
    assert system._memory is None or system.memory.db.count() == 0


def test_a_process_without_memory_gets_e_nosys(system: System, workspace: Path) -> None:
    caps = CapabilitySet(system.authority)
    caps.add(system.authority.mint("mem.*"))
    orphan = Process(name="orphan", workspace=Workspace(workspace), caps=caps)
    result = _err(system, orphan, call="mem.store", text="x")
    assert result.code == ErrorCode.E_NOSYS and "no memory" in (result.message or "")


def test_resources() -> None:
    assert record_resources("archival", []) == ["mem:archival"]
    assert record_resources("recall", ["a", "b"]) == ["mem:recall/a", "mem:recall/b"]


def test_a_tag_no_memory_has_does_not_hide_what_was_told(
    system: System, workspace: Path, shell: Process
) -> None:
    """The model sometimes adds a tag of its own ("work") to a search for a fact the person
    told without one: nothing tagged so, the search widens to every memory the process may
    see, and says so; a process scoped to a tag still sees only that tag's memories."""
    _seed(system, shell)
    _ok(system, shell, call="mem.store", text="My gym locker is number 88")
    found = _ok(system, shell, call="mem.search", query="locker number", tags=["work"], k=1)
    assert [h["text"] for h in found["hits"]] == ["My gym locker is number 88"]
    assert "nothing is tagged work" in found["note"]
    tagged = _ok(system, shell, call="mem.search", query="pancakes", tags=["recipes"], k=1)
    assert tagged.get("note") is None, "a tag that holds the answer is kept to"
    scope = "mem:archival/recipes"
    app = _scoped(system, workspace, {"mem.search": scope})
    hits = _ok(system, app, call="mem.search", query="bank PIN", tags=["recipes"], k=5)["hits"]
    assert all("PIN" not in h["text"] for h in hits)


def test_an_earlier_answer_is_not_found_the_record_it_came_from_is(
    system: System, shell: Process
) -> None:
    """A recall page of a question answered from memory (and the model's wrong guess) is not
    what mem.search finds; the page of what was told is."""
    from llmos.memory.store import NewRecord
    from llmos.syscalls.services import ANSWERED_KEY

    told, answered = system.memory.store_many(
        [
            NewRecord("user: my cat is called Miso", meta={"turn": 1, ANSWERED_KEY: False}),
            NewRecord(
                "user: what is my cat called?\nreply: Your cat is called Tiger.",
                meta={"turn": 2, ANSWERED_KEY: True},
            ),
        ],
        "recall",
    )
    found = _ok(system, shell, call="mem.search", query="what is my cat called?", k=5)
    ids = [h["id"] for h in found["hits"]]
    assert told.id in ids and answered.id not in ids


def test_the_kernel_sees_a_found_page_as_a_recalled_one(system: System, shell: Process) -> None:
    """A page of talk found by mem.search is shown to the kernel as the pager shows it when
    recalled (what was said, not the kernel's "Noted."), with its id and without where and
    when it was stored or its score; a kept fact keeps all of it; the caller gets all."""
    from llmos.kernel.loop import compact_result
    from llmos.memory.store import NewRecord

    (page,) = system.memory.store_many(
        [
            NewRecord(
                "[turn 3, 8 May 2023, 13:56] user: [1:56 pm on 8 May, 2023] Gina: I got my "
                "tattoo yesterday.\nreply: Noted.\n(said on 8 May 2023: yesterday = 7 May 2023)",
                meta={"turn": 3},
            )
        ],
        "recall",
    )
    _ok(system, shell, call="mem.store", text="My sister's tattoo is a rose.")
    system.memory.flush(60)
    result = system.dispatch(shell, {"call": "mem.search", "query": "tattoo", "k": 5})
    assert result.ok
    found = {h["collection"]: h for h in result.value["hits"]}
    assert set(found) == {"recall", "archival"} and "Noted." in found["recall"]["text"]
    shown = json.loads(compact_result(result))["value"]["hits"]
    page_hit = next(h for h in shown if h["id"] == page.id)
    assert page_hit == {
        "id": page.id,
        "text": "[turn 3, 8 May 2023, 13:56] user: [1:56 pm on 8 May, 2023] Gina: I got my "
        "tattoo yesterday.\n(said on 8 May 2023: yesterday = 7 May 2023)",
    }
    fact = next(h for h in shown if h["id"] != page.id)
    assert fact == found["archival"]


def test_a_found_page_of_a_turn_that_did_something_keeps_its_reply() -> None:
    from llmos.kernel.prompt import shown_result

    text = (
        "[turn 4, 8 May 2023, 14:00] user: copy a.txt to b.txt\nreply: Copied.\n"
        '→ {"call": "fs.copy"}'
    )
    hit = {"id": "r4", "text": text, "tags": [], "stored": "x", "collection": "recall", "score": 1}
    data = {"ok": True, "call": "mem.search", "value": {"hits": [hit]}}
    assert shown_result(data)["value"]["hits"] == [{"id": "r4", "text": text}]
    other = {"ok": True, "call": "fs.read", "value": {"hits": [hit]}}
    assert shown_result(other) == other
