"""Capabilities: signed, scoped, attenuable, expiring, revocable grants held by processes."""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

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
    return pattern == call or pattern == ANY or fnmatch.fnmatchcase(call, pattern)


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


def pattern_within(child: str, parent: str) -> bool:
    """True when every call the child pattern covers is covered by the parent pattern."""
    return parent == ANY or child == parent or fnmatch.fnmatchcase(child, parent)


class CapabilityAuthority:
    """Mints, verifies, attenuates and revokes capabilities under the installation key."""

    def __init__(self, signer: Signer, revocations: Path | None = None) -> None:
        self._signer = signer
        self._revocations_path = revocations
        self._revoked: set[str] = set()
        self._verified: set[tuple[str, str]] = set()
        self._revocations_mtime: float = -1.0
        self._load_revocations()

    def mint(self, call: str, scope: str = ANY, ttl: float | None = None) -> Capability:
        """A new root capability for `call` on `scope`, expiring after `ttl` seconds if given."""
        expires = None if ttl is None else time.time() + ttl
        return self._sign(
            Capability(id=secrets.token_hex(8), call=call, scope=scope, expires=expires)
        )

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
        if not scope_covers(parent.scope, scope) or (scope == ANY and parent.scope != ANY):
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
        """Raise E_PERM unless `cap` is genuine, unexpired and neither it nor an ancestor revoked."""
        key = (cap.sig, cap.id)
        if key not in self._verified:
            if not cap.sig or not self._signer.verify(cap.payload(), cap.sig):
                raise LlmosError(ErrorCode.E_PERM, f"capability {cap.id} is forged or altered")
            self._verified.add(key)
        if cap.expires is not None and (now or time.time()) >= cap.expires:
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
        """Revoke a capability and, through the chain, every capability attenuated from it."""
        self._refresh_revocations()
        self._revoked.add(cap_id)
        if self._revocations_path is not None:
            from llmos.syscalls.atomic import write_atomic

            data = json.dumps(sorted(self._revoked)).encode()
            write_atomic(self._revocations_path, data)
            self._revocations_mtime = self._revocations_path.stat().st_mtime

    def _load_revocations(self) -> None:
        path = self._revocations_path
        if path is None or not path.exists():
            return
        try:
            self._revoked = set(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise LlmosError(
                ErrorCode.E_IO, f"revocation list {path} is unreadable: {exc}"
            ) from exc
        self._revocations_mtime = path.stat().st_mtime

    def _refresh_revocations(self) -> None:
        """Pick up revocations made by another llmos process (cheap: one stat)."""
        path = self._revocations_path
        if path is None:
            return
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._revocations_mtime:
            self._load_revocations()


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
        """The resources no held capability covers for `call` (all of them if none do)."""
        return [r for r in resources if self.find(call, [r]) is None] or list(resources)


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
        caps = [Capability.model_validate(item) for item in raw]
        return [c for c in caps if self.authority.is_valid(c)]

    def save(self, workspace: Path, cap: Capability) -> None:
        """Remember `cap` for every later session on this workspace."""
        from llmos.syscalls.atomic import write_atomic

        data = self._read()
        data.setdefault(str(workspace), []).append(cap.model_dump(mode="json"))
        write_atomic(self.path, json.dumps(data, indent=1).encode())
