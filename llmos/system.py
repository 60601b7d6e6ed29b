"""The system: wires settings, key, capability authority, registry, example bank, audit log and
dispatcher."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.apps.mcp_client import mcp_servers
from llmos.apps.plugins import build_registry
from llmos.config import Settings
from llmos.errors import LlmosError
from llmos.kernel.examples import ExampleBank
from llmos.kernel.lessons import Lessons
from llmos.memory.embedder import Embedder
from llmos.security.audit import AuditLog
from llmos.security.capabilities import (
    CapabilityAuthority,
    CapabilitySet,
    GrantCallback,
    GrantStore,
)
from llmos.security.journal import Journal
from llmos.security.keys import Signer, load_or_create_key
from llmos.security.workspace import Workspace
from llmos.syscalls.base import Syscall, SyscallResult
from llmos.syscalls.context import Process, Services
from llmos.syscalls.dispatch import Dispatcher
from llmos.syscalls.hooks import AuditHooks
from llmos.syscalls.tool import ToolTable

if TYPE_CHECKING:
    from llmos.documents import Documents
    from llmos.memory.cipher import RecordCipher
    from llmos.memory.files import FileIndex
    from llmos.memory.memory import Memory


log = logging.getLogger(__name__)


class System:
    """One llmos installation, opened: everything a caller needs to spawn processes and dispatch."""

    def __init__(self, settings: Settings, *, plugins: bool = True) -> None:
        self.settings = settings
        home = settings.ensure_home()
        self.signer = Signer(load_or_create_key(home / "keys" / "install.key"))
        self.authority = CapabilityAuthority(self.signer, home / "revoked.json")
        self.tools = ToolTable()
        # The bank's embedder loads only when examples are first ranked; it shares the loaded
        # model with memory's (one per folder per process).
        self.embedder = Embedder(settings.memory_embedder)
        self.examples = ExampleBank(embedder=self.embedder)
        # With memory encrypted, the audit keeps keyed digests of argument values, not them.
        self.audit = AuditLog(
            home / "audit.log", self.signer, digest_values=settings.memory_encrypt
        )
        self.mcp = mcp_servers(settings.mcp.servers, home)
        self.registry, self.plugins = build_registry(
            plugins=plugins,
            tools=self.tools,
            examples=self.examples,
            observers=[("llmos.audit", AuditHooks(self.audit))],
            extra=self.mcp,
        )
        # The person's lessons rank above the built-ins and the apps' examples.
        self.lessons = Lessons(home, _sealer(settings))
        self.lessons.teach_bank(self.examples)
        self.grants = GrantStore(home / "grants.json", self.authority)
        self.journal = Journal(home / "journal", settings.journal_max_mb << 20)
        self.dispatcher = Dispatcher(
            self.registry, self.authority, self.plugins.hooks, self.journal
        )
        self._memory: Memory | None = None
        self._memory_lock = threading.Lock()
        self._files: dict[Path, FileIndex] = {}
        self.documents = _documents(settings)

    @property
    def memory(self) -> Memory:
        """The installation's memory, opened on first use: a command that never remembers never
        loads Chroma or the embedder, nor takes the memory store's lock."""
        with self._memory_lock:
            if self._memory is None:
                from llmos.memory.memory import Memory

                self._memory = Memory.open(self.settings)
            return self._memory

    @property
    def memory_opened(self) -> bool:
        """Whether the memory has been opened (without opening it)."""
        return self._memory is not None

    def spawn(
        self,
        name: str,
        workspace: Path,
        *,
        patterns: Iterable[str] | None = None,
        grant: GrantCallback | None = None,
        remembered: bool = True,
    ) -> Process:
        """A process on `workspace` holding a capability for each call pattern (the shell's
        defaults unless given), plus the workspace's "always" grants when `remembered`."""
        ws = Workspace(workspace, hidden=[self.settings.home])
        caps = CapabilitySet(self.authority)
        for pattern in self.settings.default_caps if patterns is None else patterns:
            caps.add(self.authority.mint(pattern))
        if remembered:
            for cap in self.grants.load(ws.root):
                caps.add(cap)
        return Process(
            name=name,
            workspace=ws,
            caps=caps,
            grant=grant,
            grant_store=self.grants,
            services=Services(
                {
                    "llmos.memory.memory.Memory": lambda: self.memory,
                    "llmos.syscalls.services.Memories": lambda: self.memory,
                    "llmos.memory.files.FileIndex": lambda: self.files(ws),
                    "llmos.syscalls.services.FilesByMeaning": lambda: self.files(ws),
                    "llmos.documents.Documents": lambda: self.documents,
                }
            ),
        )

    def files(self, workspace: Workspace) -> FileIndex:
        """The search-by-meaning index of a workspace's files, opened on first use and kept
        per workspace; its embedder is the one the example bank and memory share."""
        from llmos.memory.files import FileIndex

        with self._memory_lock:
            index = self._files.get(workspace.root)
            if index is None:
                index = FileIndex.open(
                    self.settings, workspace, self.embedder, documents=self.documents
                )
                self._files[workspace.root] = index
            return index

    def dispatch(self, process: Process, raw: Syscall | dict[str, Any]) -> SyscallResult:
        """Run one syscall for `process` through the one dispatch path."""
        return self.dispatcher.dispatch(process, raw)

    def close(self) -> None:
        """Write the lessons' use counts; release the memory store (if opened) and the audit
        log."""
        try:
            self.lessons.flush()
        except LlmosError as exc:  # a count lost is no reason to keep the store open
            log.warning("lessons: %s", exc.message)
        with self._memory_lock:
            memory, self._memory = self._memory, None
            files, self._files = list(self._files.values()), {}
        for index in files:
            index.close()
        for _, server in self.mcp:
            server.close()
        try:
            if memory is not None:
                memory.close()
        finally:
            self.audit.close()

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _documents(settings: Settings) -> Documents:
    """The document reader with its text cache under LLMOS_HOME, sealed with the memory key
    when memory is encrypted (the text of a person's documents is as private as memory)."""
    from llmos.documents import CACHE_DIR, Documents

    return Documents(settings.ensure_home() / CACHE_DIR, _sealer(settings))


def _sealer(settings: Settings) -> RecordCipher | None:
    """The memory's cipher when memory is encrypted (what is kept of documents and lessons is
    as private as memory), else None."""
    if not settings.memory_encrypt:
        return None
    from llmos.memory.cipher import RecordCipher, memory_key_path

    return RecordCipher.from_key_file(memory_key_path(settings.ensure_home()))
