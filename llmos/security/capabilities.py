"""Capabilities: signed, scoped, attenuable, expiring, revocable grants held by processes."""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from llmos.errors import ErrorCode, LlmosError
from llmos.security.keys import Signer

ANY = "*"


class Capability(BaseModel):
    """The right to make calls matching `call` on resources inside `scope`, until `expires`."""

    model_config = ConfigDict(frozen=True)

    id: str
    call: str
    scope: str = ANY
    expires: float | None = None
    chain: tuple[str, ...] = ()
    sig: str = ""

    def payload(self) -> bytes:
        """The canonical bytes that the signature covers (everything but the signature)."""
        body = self.model_dump(exclude={"sig"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def describe(self) -> str:
        """A short human form: `fs.write on docs (expires in 59 s)`."""
        text = self.call if self.scope == ANY else f"{self.call} on {self.scope}"
        if self.expires is not None:
            text += f" (expires in {max(0, int(self.expires - time.time()))} s)"
        return text


def call_matches(pattern: str, call: str) -> bool:
    """True when a capability's call pattern (`fs.read`, `fs.*`, `*`) covers `call`."""
    return pattern in (call, ANY) or fnmatch.fnmatchcase(call, pattern)


def scope_covers(scope: str, resource: str) -> bool:
    """True when `resource` lies inside `scope`: whole path components, never string prefixes."""
    if scope == ANY:
        return True
    base = scope.strip("/")
    if base in ("", "."):
        return True
    res = resource.strip("/")
    if res == base or res.startswith(base + "/"):
        return True
    return any(ch in base for ch in "*?[") and fnmatch.fnmatchcase(res, base)


_GLOB = frozenset("*?[")


def _has_glob(text: str) -> bool:
    return any(ch in _GLOB for ch in text)


def pattern_within(child: str, parent: str) -> bool:
    """True when every call the child pattern covers is covered by the parent pattern.

    Matching the child pattern *as a string* against the parent is only sound for a literal
    child (`????` matches the text `[ab]`, yet `[ab]` covers `a`, which `????` does not). A
    child with wildcards must equal the parent, or sit under a parent of the form `prefix*`.
    """
    if parent == ANY or child == parent:
        return True
    if not _has_glob(child):
        return fnmatch.fnmatchcase(child, parent)
    prefix = parent[:-1]
    return parent.endswith("*") and not _has_glob(prefix) and child.startswith(prefix)


def scope_within(child: str, parent: str) -> bool:
    """True when every resource the child scope covers is covered by the parent scope.

    A glob parent (`*.md`) only admits itself: `*.md/*` would cover `x.md/y`, which `*.md`
    does not. A literal parent admits itself and anything below it, glob or not.
    """
    if parent == ANY:
        return True
    if child == ANY:
        return False
    base, sub = parent.strip("/"), child.strip("/")
    if base in ("", "."):
        return True
    if _has_glob(base):
        return sub == base
    return sub == base or sub.startswith(base + "/")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock beside `path` (`path` + ".lock", which every llmos process takes
    for a read-modify-write of `path`); made with its folder if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _place_payload(cap: Capability, place: str) -> bytes:
    return json.dumps([place, cap.id, cap.sig]).encode()


class CapabilityAuthority:
    """Mints, verifies, attenuates and revokes capabilities under the installation key."""

    def __init__(self, signer: Signer, revocations: Path | None = None) -> None:
        self._signer = signer
        self._revocations_path = revocations
        self._revoked: set[str] = set()
        self._verified: dict[int, Capability] = {}
        self._revocations_stamp: tuple[int, int, int, int] | None = None
        self._load_revocations()

    def mint(self, call: str, scope: str = ANY, ttl: float | None = None) -> Capability:
        """A new root capability for `call` on `scope`, expiring after `ttl` seconds if given."""
        expires = None if ttl is None else time.time() + ttl
        return self._sign(
            Capability(id=secrets.token_hex(8), call=call, scope=scope, expires=expires)
        )

    def bind(self, cap: Capability, place: str) -> str:
        """A signature tying `cap` to `place` (a workspace), under a key of its own: a grant
        remembered for one workspace and copied by hand to another is not honoured there."""
        return self._signer.derive("grant places").sign(_place_payload(cap, place))

    def is_bound(self, cap: Capability, place: str, signature: object) -> bool:
        """Whether `signature` ties `cap` to `place` (see `bind`)."""
        if not isinstance(signature, str):
            return False
        return self._signer.derive("grant places").verify(_place_payload(cap, place), signature)

    def _sign(self, cap: Capability) -> Capability:
        return cap.model_copy(update={"sig": self._signer.sign(cap.payload())})

    def attenuate(
        self,
        parent: Capability,
        call: str | None = None,
        scope: str | None = None,
        ttl: float | None = None,
    ) -> Capability:
        """A narrower child of `parent`: never more calls, a wider scope, or a later expiry."""
        self.verify(parent)
        call = call or parent.call
        scope = scope or parent.scope
        if not pattern_within(call, parent.call):
            raise LlmosError(ErrorCode.E_PERM, f"cannot widen {parent.call!r} to {call!r}")
        if not scope_within(scope, parent.scope):
            raise LlmosError(ErrorCode.E_PERM, f"cannot widen scope {parent.scope!r} to {scope!r}")
        expires = parent.expires
        if ttl is not None:
            mine = time.time() + ttl
            expires = mine if expires is None else min(expires, mine)
        child = Capability(
            id=secrets.token_hex(8),
            call=call,
            scope=scope,
            expires=expires,
            chain=(*parent.chain, parent.id),
        )
        return self._sign(child)

    def verify(self, cap: Capability, now: float | None = None) -> None:
        """Raise E_PERM unless `cap` is genuine, unexpired and not revoked (nor any ancestor)."""
        # Verified signatures are cached by object identity (holding the object, so its id is
        # never reused): capabilities are frozen, and an edited copy is a new object that must
        # pass the signature check itself.
        if self._verified.get(id(cap)) is not cap:
            if not cap.sig or not self._signer.verify(cap.payload(), cap.sig):
                raise LlmosError(ErrorCode.E_PERM, f"capability {cap.id} is forged or altered")
            self._verified[id(cap)] = cap
        if cap.expires is not None and (time.time() if now is None else now) >= cap.expires:
            raise LlmosError(ErrorCode.E_PERM, f"capability {cap.describe()} has expired")
        self._refresh_revocations()
        if self._revoked and (cap.id in self._revoked or self._revoked.intersection(cap.chain)):
            raise LlmosError(ErrorCode.E_PERM, f"capability {cap.id} has been revoked")

    def is_valid(self, cap: Capability) -> bool:
        """True when `verify` would pass."""
        try:
            self.verify(cap)
        except LlmosError:
            return False
        return True

    def revoke(self, cap_id: str) -> None:
        """Revoke a capability and, through the chain, every capability attenuated from it.

        With a revocation file, the read-add-write runs under an exclusive lock and re-reads
        the file first, so two llmos processes revoking at once never drop each other's entry.
        """
        path = self._revocations_path
        if path is None:
            self._revoked.add(cap_id)
            return
        from llmos.atomic import write_atomic

        with locked(path):
            self._load_revocations()
            self._revoked.add(cap_id)
            write_atomic(path, json.dumps(sorted(self._revoked)).encode())
            self._revocations_stamp = _stamp(os.stat(path))

    def _load_revocations(self) -> None:
        """Merge the revocation file into the in-memory set (revocations are never undone)."""
        path = self._revocations_path
        if path is None:
            return
        try:
            with open(path, "rb") as fh:
                stamp = _stamp(os.fstat(fh.fileno()))
                data = json.loads(fh.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise LlmosError(
                ErrorCode.E_IO, f"revocation list {path} is unreadable: {exc}"
            ) from exc
        if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
            raise LlmosError(ErrorCode.E_IO, f"revocation list {path} is not a list of ids")
        self._revoked.update(data)
        self._revocations_stamp = stamp

    def _refresh_revocations(self) -> None:
        """Pick up revocations made by another llmos process (cheap: one stat).

        The file is compared by inode, size and mtime in ns, not mtime alone: a coarse clock
        can give two quick rewrites the same mtime, and every rewrite is a new inode.
        """
        path = self._revocations_path
        if path is None:
            return
        try:
            stamp = _stamp(os.stat(path))
        except FileNotFoundError:
            return
        if stamp != self._revocations_stamp:
            self._load_revocations()


def _stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies one version of a file: device, inode, size and mtime (ns)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class GrantAnswer(StrEnum):
    """How a person answered a grant prompt (Deno's choices)."""

    ONCE = "once"
    SESSION = "session"
    ALWAYS = "always"
    DENY = "deny"


@dataclass(frozen=True)
class GrantRequest:
    """What a grant prompt asks: may `process` make `call` on `resource`?"""

    process: str
    call: str
    resource: str
    reason: str = ""
    """Why it is asked when holding the capability is not the question: the call does what
    the person's request did not ask for (its answer then counts for this one call)."""


GrantCallback = Callable[[GrantRequest], GrantAnswer]


@dataclass
class CapabilitySet:
    """The capabilities a process holds, plus the denials it was given (deny beats allow)."""

    authority: CapabilityAuthority
    caps: list[Capability] = field(default_factory=list)
    denied: list[tuple[str, str]] = field(default_factory=list)

    def add(self, cap: Capability) -> None:
        """Hold `cap` after checking it is genuine."""
        self.authority.verify(cap)
        self.caps.append(cap)

    def inherit(self, parent: CapabilitySet) -> None:
        """Also hold what `parent` holds and refuse what it refuses (a child process started
        by a person in a session gets what they granted and denied in it)."""
        held = {c.id for c in self.caps}
        for cap in parent.caps:
            if cap.id not in held:
                self.add(cap)
        self.denied.extend(d for d in parent.denied if d not in self.denied)

    def deny(self, call: str, scope: str = ANY) -> None:
        """Refuse `call` on `scope` from now on, whatever capability is held."""
        self.denied.append((call, scope))

    def remove(self, cap_id: str) -> bool:
        """Drop a held capability; True if it was held."""
        before = len(self.caps)
        self.caps = [c for c in self.caps if c.id != cap_id]
        return len(self.caps) != before

    def is_denied(self, call: str, resources: Sequence[str]) -> bool:
        """True when a denial covers this call on any of its resources."""
        return any(
            call_matches(pattern, call)
            and (not resources or any(scope_covers(scope, r) for r in resources))
            for pattern, scope in self.denied
        )

    def find(self, call: str, resources: Iterable[str]) -> Capability | None:
        """A valid held capability covering `call` on every resource, or None."""
        res = list(resources)
        if self.is_denied(call, res):
            return None
        for cap in self.caps:
            if not call_matches(cap.call, call):
                continue
            if res and not all(scope_covers(cap.scope, r) for r in res):
                continue
            if self.authority.is_valid(cap):
                return cap
        return None

    def missing(self, call: str, resources: Sequence[str]) -> list[str]:
        """The resources no held capability covers for `call`, each on its own (scopes
        combine); for a call with no resources, [ANY] when no capability for it is held."""
        if not resources:
            return [] if self.find(call, []) is not None else [ANY]
        return [r for r in resources if self.find(call, [r]) is None]


class GrantStore:
    """Per-workspace "always" grants, persisted as signed capabilities under LLMOS_HOME."""

    def __init__(self, path: Path, authority: CapabilityAuthority) -> None:
        self.path = path
        self.authority = authority

    def _read(self) -> dict[str, list[dict[str, object]]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise LlmosError(
                ErrorCode.E_IO, f"grants file {self.path} is unreadable: {exc}"
            ) from exc
        return data if isinstance(data, dict) else {}

    def load(self, workspace: Path) -> list[Capability]:
        """The still-valid capabilities granted "always" for this workspace."""
        raw = self._read().get(str(workspace), [])
        caps: list[Capability] = []
        for item in raw if isinstance(raw, list) else []:
            if not isinstance(item, dict):
                continue
            entry = dict(item)
            place = entry.pop("workspace_sig", None)
            try:
                cap = Capability.model_validate(entry)
            except ValidationError:
                continue  # an edited or damaged entry is not honoured, and does not stop a spawn
            if self.authority.is_valid(cap) and self.authority.is_bound(cap, str(workspace), place):
                caps.append(cap)
        return caps

    def save(self, workspace: Path, cap: Capability) -> None:
        """Remember `cap` for every later session on this workspace (read, add and write under
        the file's lock, so a grant saved by another llmos process at once is kept too)."""
        from llmos.atomic import write_atomic

        with locked(self.path):
            data = self._read()
            entry = cap.model_dump(mode="json")
            entry["workspace_sig"] = self.authority.bind(cap, str(workspace))
            data.setdefault(str(workspace), []).append(entry)
            write_atomic(self.path, json.dumps(data, indent=1).encode())
