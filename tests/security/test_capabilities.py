"""Capabilities: unforgeable, scoped, attenuable, expiring, revocable; and the grant flow."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.security.capabilities import (
    ANY,
    Capability,
    CapabilityAuthority,
    CapabilitySet,
    GrantAnswer,
    GrantRequest,
    GrantStore,
    pattern_within,
    scope_covers,
)
from llmos.security.keys import Signer
from llmos.security.workspace import Workspace
from llmos.syscalls.context import Process
from llmos.system import System


@pytest.fixture
def signer() -> Signer:
    return Signer(b"k" * 32)


@pytest.fixture
def revoked_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "revoked.json"


@pytest.fixture
def authority(signer: Signer, revoked_file: Path) -> CapabilityAuthority:
    return CapabilityAuthority(signer, revoked_file)


def _refused(authority: CapabilityAuthority, cap: Capability, word: str) -> None:
    with pytest.raises(LlmosError) as info:
        authority.verify(cap)
    assert info.value.code == ErrorCode.E_PERM
    assert word in info.value.message


# forging and altering


def test_minted_capability_verifies(authority: CapabilityAuthority) -> None:
    cap = authority.mint("fs.read", scope="docs")
    authority.verify(cap)
    assert authority.is_valid(cap)
    assert cap.sig and cap.call == "fs.read" and cap.scope == "docs"


def test_signed_by_another_key_is_forged(authority: CapabilityAuthority) -> None:
    other = CapabilityAuthority(Signer(b"x" * 32))
    _refused(authority, other.mint("fs.*"), "forged")


def test_unsigned_capability_is_forged(authority: CapabilityAuthority) -> None:
    _refused(authority, Capability(id="deadbeef", call="*"), "forged")
    genuine = authority.mint("fs.read")
    _refused(authority, genuine.model_copy(update={"sig": ""}), "forged")


@pytest.mark.parametrize("junk", ["zz", "\u00e9" * 64, "\ud800", "0" * 64])
def test_junk_signature_is_forged_not_a_crash(authority: CapabilityAuthority, junk: str) -> None:
    cap = authority.mint("fs.read")
    _refused(authority, cap.model_copy(update={"sig": junk}), "forged")


@pytest.mark.parametrize(
    "update",
    [
        {"call": "*"},
        {"call": "fs.write"},
        {"scope": ANY},
        {"scope": "docs2"},
        {"expires": None},
        {"chain": ()},
        {"id": "0123456789abcdef"},
    ],
)
def test_altered_capability_is_refused_even_after_verifying_the_original(
    authority: CapabilityAuthority, update: dict[str, Any]
) -> None:
    parent = authority.mint("fs.*", scope="docs", ttl=60)
    cap = authority.attenuate(parent, call="fs.read")
    authority.verify(cap)  # a cached verification must not vouch for an edited copy
    altered = cap.model_copy(update=update)
    _refused(authority, altered, "forged")
    assert not authority.is_valid(altered)
    authority.verify(cap)


def test_altered_capability_is_not_found_in_a_set(authority: CapabilityAuthority) -> None:
    caps = CapabilitySet(authority)
    cap = authority.mint("fs.read", scope="docs")
    caps.add(cap)
    caps.caps.append(cap.model_copy(update={"call": "fs.write", "scope": ANY}))
    assert caps.find("fs.read", ["docs/a"]) == cap
    assert caps.find("fs.write", ["docs/a"]) is None
    with pytest.raises(LlmosError):
        caps.add(cap.model_copy(update={"scope": ANY}))


# expiry


def test_expired_capability_is_refused(
    authority: CapabilityAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = authority.mint("fs.read", ttl=60)  # valid now, however loaded the machine
    authority.verify(cap)
    assert cap.expires is not None
    later = cap.expires + 1
    monkeypatch.setattr("llmos.security.capabilities.time.time", lambda: later)
    _refused(authority, cap, "expired")
    caps = CapabilitySet(authority, caps=[cap])
    assert caps.find("fs.read", ["a"]) is None


def test_expiry_boundary_with_explicit_now(authority: CapabilityAuthority) -> None:
    cap = authority.mint("fs.read", ttl=100)
    assert cap.expires is not None
    authority.verify(cap, now=cap.expires - 1)
    with pytest.raises(LlmosError) as info:
        authority.verify(cap, now=cap.expires)
    assert info.value.code == ErrorCode.E_PERM


def test_expired_capability_cannot_be_added(authority: CapabilityAuthority) -> None:
    cap = authority.mint("fs.read", ttl=0.01)
    time.sleep(0.05)
    with pytest.raises(LlmosError):
        CapabilitySet(authority).add(cap)


# revocation


def test_revoked_capability_and_its_descendants_are_refused(
    authority: CapabilityAuthority,
) -> None:
    parent = authority.mint("fs.*")
    child = authority.attenuate(parent, call="fs.read")
    grandchild = authority.attenuate(child, scope="docs")
    sibling = authority.mint("fs.*")
    authority.revoke(parent.id)
    for cap in (parent, child, grandchild):
        _refused(authority, cap, "revoked")
    authority.verify(sibling)
    with pytest.raises(LlmosError) as info:
        authority.attenuate(parent, call="fs.stat")
    assert info.value.code == ErrorCode.E_PERM


def test_revoking_a_child_leaves_the_parent(authority: CapabilityAuthority) -> None:
    parent = authority.mint("fs.*")
    child = authority.attenuate(parent, call="fs.read")
    authority.revoke(child.id)
    authority.verify(parent)
    _refused(authority, child, "revoked")


def test_revocation_persists_for_a_new_authority(
    authority: CapabilityAuthority, signer: Signer, revoked_file: Path
) -> None:
    cap = authority.mint("fs.read")
    child = authority.attenuate(cap, scope="docs")
    authority.revoke(cap.id)
    later = CapabilityAuthority(signer, revoked_file)
    _refused(later, cap, "revoked")
    _refused(later, child, "revoked")
    assert json.loads(revoked_file.read_text()) == [cap.id]


def test_revocation_is_seen_by_another_live_authority(
    authority: CapabilityAuthority, signer: Signer, revoked_file: Path
) -> None:
    other = CapabilityAuthority(signer, revoked_file)
    first, second = authority.mint("fs.read"), authority.mint("fs.write")
    other.verify(first)
    other.verify(second)
    authority.revoke(first.id)
    _refused(other, first, "revoked")
    other.verify(second)
    before = os.stat(revoked_file)
    authority.revoke(second.id)
    # A coarse clock can give the rewrite the same mtime: it must still be noticed.
    os.utime(revoked_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    _refused(other, second, "revoked")


def test_two_authorities_revoking_never_lose_an_entry(
    authority: CapabilityAuthority, signer: Signer, revoked_file: Path
) -> None:
    authority.revoke("r0")
    other = CapabilityAuthority(signer, revoked_file)
    stale = os.stat(revoked_file)
    authority.revoke("x")
    os.utime(revoked_file, ns=(stale.st_atime_ns, stale.st_mtime_ns))  # same mtime as `other` saw
    other.revoke("y")
    assert set(json.loads(revoked_file.read_text())) == {"r0", "x", "y"}


def test_concurrent_revokers_keep_every_revocation(signer: Signer, revoked_file: Path) -> None:
    def work(n: int) -> None:
        auth = CapabilityAuthority(signer, revoked_file)
        for i in range(15):
            auth.revoke(f"t{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(json.loads(revoked_file.read_text())) == 60


def test_concurrent_always_grants_keep_every_grant(
    authority: CapabilityAuthority, tmp_path: Path
) -> None:
    # The shell and `llmos run` can both remember an "always" answer at once.
    path, ws = tmp_path / "home" / "grants.json", tmp_path / "ws"

    def work(n: int) -> None:
        store = GrantStore(path, authority)
        for i in range(15):
            store.save(ws, authority.mint(f"fs.read{n}", f"f{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(GrantStore(path, authority).load(ws)) == 60


def test_unreadable_revocation_list_is_an_error(signer: Signer, revoked_file: Path) -> None:
    revoked_file.parent.mkdir(parents=True)
    revoked_file.write_text("{not json")
    with pytest.raises(LlmosError) as info:
        CapabilityAuthority(signer, revoked_file)
    assert info.value.code == ErrorCode.E_IO


# attenuation


def test_attenuate_narrower(authority: CapabilityAuthority) -> None:
    parent = authority.mint("fs.*", scope="data", ttl=100)
    child = authority.attenuate(parent, call="fs.read", scope="data/sub", ttl=10)
    authority.verify(child)
    assert (child.call, child.scope) == ("fs.read", "data/sub")
    assert child.chain == (parent.id,)
    assert parent.expires is not None and child.expires is not None
    assert child.expires < parent.expires
    same = authority.attenuate(parent)
    assert (same.call, same.scope, same.expires) == ("fs.*", "data", parent.expires)


def test_attenuated_child_never_outlives_parent(authority: CapabilityAuthority) -> None:
    parent = authority.mint("fs.read", ttl=5)
    child = authority.attenuate(parent, ttl=10_000)
    assert parent.expires is not None
    assert child.expires is not None and child.expires <= parent.expires
    forever = authority.mint("fs.read")
    assert authority.attenuate(forever, ttl=5).expires is not None


@pytest.mark.parametrize(
    "parent_call,child_call",
    [
        ("fs.read", "fs.*"),
        ("fs.read", "fs.write"),
        ("fs.*", "*"),
        ("fs.*", "image.info"),
        ("fs.r*", "fs.*"),
        ("????", "[ab]"),  # the text "[ab]" matches ????, the pattern covers "a"
        ("fs.????", "fs.[rw]"),
        ("fs.?ead", "fs.*"),
    ],
)
def test_attenuate_cannot_widen_call(
    authority: CapabilityAuthority, parent_call: str, child_call: str
) -> None:
    parent = authority.mint(parent_call)
    with pytest.raises(LlmosError) as info:
        authority.attenuate(parent, call=child_call)
    assert info.value.code == ErrorCode.E_PERM


@pytest.mark.parametrize(
    "parent_call,child_call",
    [("*", "fs.*"), ("fs.*", "fs.read"), ("fs.*", "fs.[rw]*"), ("fs.read", "fs.read")],
)
def test_attenuate_call_patterns_inside_parent(
    authority: CapabilityAuthority, parent_call: str, child_call: str
) -> None:
    assert pattern_within(child_call, parent_call)
    assert authority.attenuate(authority.mint(parent_call), call=child_call).call == child_call


@pytest.mark.parametrize(
    "parent_scope,child_scope",
    [
        ("data", ANY),
        ("data", "data2"),
        ("data", "dat"),
        ("data", "data*"),
        ("data", "/"),
        ("data", "."),
        ("data", "other/data"),
        ("data/sub", "data"),
        ("*.md", "*.md/*"),
        ("*.md", "*"),
    ],
)
def test_attenuate_cannot_widen_scope(
    authority: CapabilityAuthority, parent_scope: str, child_scope: str
) -> None:
    parent = authority.mint("fs.read", scope=parent_scope)
    with pytest.raises(LlmosError) as info:
        authority.attenuate(parent, scope=child_scope)
    assert info.value.code == ErrorCode.E_PERM


@pytest.mark.parametrize(
    "parent_scope,child_scope",
    [(ANY, "data"), ("data", "data"), ("data", "data/x"), ("data", "data/*.txt"), ("/", "a")],
)
def test_attenuate_scope_inside_parent(
    authority: CapabilityAuthority, parent_scope: str, child_scope: str
) -> None:
    child = authority.attenuate(authority.mint("fs.read", scope=parent_scope), scope=child_scope)
    assert child.scope == child_scope


# scopes and denials


@pytest.mark.parametrize(
    "scope,resource,covered",
    [
        ("data", "data", True),
        ("data", "data/x", True),
        ("data", "data/sub/x.txt", True),
        ("data/", "data/x", True),
        ("/data", "data/x", True),
        ("data", "data2/x", False),
        ("data", "data2", False),
        ("data", "dat", False),
        ("data", "", False),
        ("data/sub", "data/other", False),
        (ANY, "anything/at/all", True),
        ("", "x", True),
        ("*.txt", "a.txt", True),
        ("*.txt", "a.md", False),
    ],
)
def test_scope_covers_by_path_components(scope: str, resource: str, covered: bool) -> None:
    assert scope_covers(scope, resource) is covered


def test_set_find_respects_scope(authority: CapabilityAuthority) -> None:
    caps = CapabilitySet(authority)
    cap = authority.mint("fs.read", scope="data")
    caps.add(cap)
    assert caps.find("fs.read", ["data/x"]) == cap
    assert caps.find("fs.read", ["data2/x"]) is None
    assert caps.find("fs.read", ["data/x", "data2/x"]) is None
    assert caps.find("fs.write", ["data/x"]) is None
    assert caps.missing("fs.read", ["data/x", "data2/x"]) == ["data2/x"]


def test_deny_beats_allow(authority: CapabilityAuthority) -> None:
    caps = CapabilitySet(authority)
    caps.add(authority.mint(ANY))
    caps.deny("fs.write", "secret")
    assert caps.find("fs.write", ["secret/a.txt"]) is None
    assert caps.find("fs.write", ["secret"]) is None
    assert caps.find("fs.write", ["secrets/a.txt"]) is not None
    assert caps.find("fs.read", ["secret/a.txt"]) is not None
    assert caps.find("fs.move", ["ok.txt", "secret/x"]) is not None
    caps.deny("fs.*", "secret")
    assert caps.find("fs.move", ["ok.txt", "secret/x"]) is None
    assert caps.is_denied("fs.read", ["secret/a"])


def test_removed_capability_is_no_longer_found(authority: CapabilityAuthority) -> None:
    caps = CapabilitySet(authority)
    cap = authority.mint("fs.read")
    caps.add(cap)
    assert caps.remove(cap.id)
    assert not caps.remove(cap.id)
    assert caps.find("fs.read", ["a"]) is None


# through dispatch


class Asker:
    """A grant callback that answers from a script and records what it was asked."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[GrantRequest] = []

    def __call__(self, request: GrantRequest) -> Any:
        self.asked.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _write(system: System, proc: Process, path: str, text: str = "hi") -> Any:
    return system.dispatch(proc, {"call": "fs.write", "path": path, "content": text})


def test_missing_capability_names_call_and_path(system: System, workspace: Path) -> None:
    (workspace / "readme.txt").write_text("hello")
    proc = system.spawn("reader", workspace, patterns=["fs.read"])
    assert system.dispatch(proc, {"call": "fs.read", "path": "readme.txt"}).ok
    res = _write(system, proc, "notes.txt")
    assert res.code == ErrorCode.E_PERM
    assert "fs.write" in (res.message or "")
    assert "notes.txt" in (res.message or "")
    assert not (workspace / "notes.txt").exists()
    assert not proc.interactive


def test_scoped_process_cannot_reach_sibling_prefix(system: System, workspace: Path) -> None:
    (workspace / "data").mkdir()
    (workspace / "data2").mkdir()
    (workspace / "data2" / "x.txt").write_text("secret")
    proc = system.spawn("scoped", workspace, patterns=[])
    proc.caps.add(system.authority.mint("fs.*", scope="data"))
    assert _write(system, proc, "data/a.txt").ok
    res = system.dispatch(proc, {"call": "fs.read", "path": "data2/x.txt"})
    assert res.code == ErrorCode.E_PERM
    assert "data2/x.txt" in (res.message or "")


def test_grant_once_allows_this_call_only(system: System, workspace: Path) -> None:
    asker = Asker(GrantAnswer.ONCE)
    proc = system.spawn("p", workspace, patterns=["fs.read"], grant=asker)
    assert proc.interactive
    assert _write(system, proc, "a.txt", "one").ok
    assert _write(system, proc, "a.txt", "two").ok
    assert len(asker.asked) == 2
    assert asker.asked[0] == GrantRequest("p", "fs.write", "a.txt")
    assert (workspace / "a.txt").read_text() == "two"
    assert proc.caps.find("fs.write", ["a.txt"]) is None


def test_grant_session_is_not_asked_again(system: System, workspace: Path) -> None:
    asker = Asker(GrantAnswer.SESSION)
    proc = system.spawn("p", workspace, patterns=["fs.read"], grant=asker)
    assert _write(system, proc, "a.txt").ok
    assert _write(system, proc, "a.txt").ok
    assert len(asker.asked) == 1
    # Only for this process: a new one (even on the same workspace) is asked again.
    asker2 = Asker(GrantAnswer.DENY)
    proc2 = system.spawn("p2", workspace, patterns=["fs.read"], grant=asker2)
    assert _write(system, proc2, "a.txt").code == ErrorCode.E_PERM
    assert len(asker2.asked) == 1
    assert (
        system.spawn("p3", workspace, patterns=["fs.read"]).caps.find("fs.write", ["a.txt"]) is None
    )


def test_grant_session_is_scoped_to_the_resource(system: System, workspace: Path) -> None:
    asker = Asker(GrantAnswer.SESSION)
    proc = system.spawn("p", workspace, patterns=[], grant=asker)
    assert _write(system, proc, "a.txt").ok
    assert _write(system, proc, "b.txt").ok
    assert [r.resource for r in asker.asked] == ["a.txt", "b.txt"]


def test_grant_always_persists_for_this_workspace_only(
    system: System, workspace: Path, tmp_path: Path
) -> None:
    asker = Asker(GrantAnswer.ALWAYS)
    proc = system.spawn("p", workspace, patterns=["fs.read"], grant=asker)
    assert _write(system, proc, "a.txt").ok
    assert _write(system, proc, "a.txt").ok
    assert len(asker.asked) == 1
    later = system.spawn("later", workspace, patterns=["fs.read"])  # non-interactive
    assert _write(system, later, "a.txt", "again").ok
    assert (workspace / "a.txt").read_text() == "again"
    forgetful = system.spawn("f", workspace, patterns=["fs.read"], remembered=False)
    assert _write(system, forgetful, "a.txt").code == ErrorCode.E_PERM
    other_ws = tmp_path / "other"
    other_ws.mkdir()
    elsewhere = system.spawn("e", other_ws, patterns=["fs.read"])
    assert _write(system, elsewhere, "a.txt").code == ErrorCode.E_PERM
    assert not (other_ws / "a.txt").exists()


def test_grant_always_survives_a_new_system(system: System, workspace: Path, settings: Any) -> None:
    proc = system.spawn("p", workspace, patterns=[], grant=Asker(GrantAnswer.ALWAYS))
    assert _write(system, proc, "a.txt").ok
    with System(settings, plugins=False) as fresh:
        later = fresh.spawn("later", workspace, patterns=[])
        assert _write(fresh, later, "a.txt", "x").ok


def test_grant_deny_refuses_and_is_not_asked_again(system: System, workspace: Path) -> None:
    asker = Asker(GrantAnswer.DENY, GrantAnswer.ONCE)
    proc = system.spawn("p", workspace, patterns=["fs.read"], grant=asker)
    res = _write(system, proc, "a.txt")
    assert res.code == ErrorCode.E_PERM
    assert "denied" in (res.message or "")
    res = _write(system, proc, "a.txt")
    assert res.code == ErrorCode.E_PERM
    assert len(asker.asked) == 1
    assert not (workspace / "a.txt").exists()


def test_deny_beats_a_held_capability_through_dispatch(system: System, workspace: Path) -> None:
    proc = system.spawn("p", workspace)  # default caps: fs.* on the whole workspace
    proc.caps.deny("fs.write", "private")
    res = _write(system, proc, "private/a.txt")
    assert res.code == ErrorCode.E_PERM
    assert "denied" in (res.message or "")
    assert not (workspace / "private").exists()
    assert _write(system, proc, "public.txt").ok


@pytest.mark.parametrize("answer", ["deny", None, "yes please", 1, "", "DENY"])
def test_unrecognised_grant_answer_fails_closed(
    system: System, workspace: Path, answer: Any
) -> None:
    proc = system.spawn("p", workspace, patterns=[], grant=Asker(answer))
    res = _write(system, proc, "a.txt")
    assert res.code == ErrorCode.E_PERM, res
    assert not (workspace / "a.txt").exists()


def test_plain_string_answer_is_understood(system: System, workspace: Path) -> None:
    asker = Asker("session")
    proc = system.spawn("p", workspace, patterns=[], grant=asker)
    assert _write(system, proc, "a.txt").ok
    assert _write(system, proc, "a.txt").ok
    assert len(asker.asked) == 1


def test_grant_callback_that_raises_is_an_error_not_a_grant(
    system: System, workspace: Path
) -> None:
    def broken(request: GrantRequest) -> GrantAnswer:
        raise RuntimeError("terminal went away")

    proc = system.spawn("p", workspace, patterns=[], grant=broken)
    res = _write(system, proc, "a.txt")
    assert not res.ok
    assert not (workspace / "a.txt").exists()


def _always_grant(system: System, workspace: Path) -> dict[str, Any]:
    proc = system.spawn("p", workspace, patterns=[], grant=Asker(GrantAnswer.ALWAYS))
    assert _write(system, proc, "a.txt").ok
    data: dict[str, Any] = json.loads(system.grants.path.read_text())
    assert len(data[str(workspace.resolve())]) == 1
    return data


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.update(scope="*"),
        lambda e: e.update(call="*"),
        lambda e: e.update(expires=None, scope="b.txt"),
        lambda e: e.update(sig="0" * 64),
        lambda e: e.update(scope=123),
        lambda e: e.pop("id"),
    ],
)
def test_tampered_grant_entry_is_not_honoured(
    system: System, workspace: Path, edit: Callable[[dict[str, Any]], Any]
) -> None:
    data = _always_grant(system, workspace)
    edit(data[str(workspace.resolve())][0])
    system.grants.path.write_text(json.dumps(data))
    later = system.spawn("later", workspace, patterns=[])  # same System: caches must not help
    assert later.caps.caps == []
    assert _write(system, later, "b.txt").code == ErrorCode.E_PERM
    assert _write(system, later, "a.txt").code == ErrorCode.E_PERM


def test_revoked_always_grant_is_not_loaded(system: System, workspace: Path) -> None:
    data = _always_grant(system, workspace)
    cap_id = data[str(workspace.resolve())][0]["id"]
    system.authority.revoke(cap_id)
    later = system.spawn("later", workspace, patterns=[])
    assert _write(system, later, "a.txt").code == ErrorCode.E_PERM


def test_scope_is_checked_where_a_symlink_really_leads(system: System, workspace: Path) -> None:
    """A link inside an allowed folder must not carry a call into a folder out of scope."""
    (workspace / "public").mkdir()
    (workspace / "private").mkdir()
    (workspace / "private" / "s.txt").write_text("secret")
    (workspace / "public" / "ok.txt").write_text("fine")
    os.symlink("../private/s.txt", workspace / "public" / "link")
    os.symlink("../private", workspace / "public" / "dir")
    caps = CapabilitySet(system.authority)
    caps.add(system.authority.mint("fs.read", scope="public"))
    proc = Process(name="scoped", workspace=Workspace(workspace), caps=caps)
    assert system.dispatch(proc, {"call": "fs.read", "path": "public/ok.txt"}).ok
    for path in ("public/link", "public/dir/s.txt"):
        result = system.dispatch(proc, {"call": "fs.read", "path": path})
        assert result.code == ErrorCode.E_PERM, path
        assert "private/s.txt" in (result.message or "")
    assert proc.workspace.guard is None, "the guard is removed after the call"


def test_derived_output_paths_need_the_scope_too(system: System, workspace: Path) -> None:
    """A default output name outside the granted scope is refused, not written."""
    from PIL import Image

    (workspace / "pics").mkdir()
    Image.new("RGB", (64, 64)).save(workspace / "pics" / "cat.png")
    caps = CapabilitySet(system.authority)
    caps.add(system.authority.mint("image.thumbnail", scope="pics/cat.png"))
    proc = Process(name="scoped", workspace=Workspace(workspace), caps=caps)
    result = system.dispatch(proc, {"call": "image.thumbnail", "path": "pics/cat.png"})
    assert result.code == ErrorCode.E_PERM
    assert not (workspace / "pics" / "cat_thumb.png").exists()
