"""Public test doubles, for llmos's own tests and for anyone testing a plugin or app: a scripted
backend, a gated fake model for concurrency, and a fake embedder so memory and the example bank
run without the sentence-transformers model. Fakes are for fast unit tests; the real model and
store are tested too (the `model` marker)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Completion, Message
from llmos.kernel.grammar import Constraint

if TYPE_CHECKING:
    from llmos.memory.embedder import Embedder
    from llmos.memory.memory import Memory

Output = str | dict[str, Any]
"""One completion of a fake: raw text, or a call (dumped as JSON)."""


def _text(out: Output) -> str:
    return out if isinstance(out, str) else json.dumps(out)


@dataclass
class ScriptedBackend:
    """Replays the given outputs in order (strings or dicts), recording every prompt it saw."""

    outputs: list[Output]
    name: str = "scripted"
    context: int = 4096
    prompts: list[list[Message]] = field(default_factory=list)
    constraints: list[Constraint | None] = field(default_factory=list)

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        """The next scripted output; E_BACKEND when the script has run out."""
        self.constraints.append(constraint)
        self.prompts.append([dict(m) for m in messages])
        if not self.outputs:
            raise LlmosError(ErrorCode.E_BACKEND, "the scripted backend has no outputs left")
        return Completion(text=_text(self.outputs.pop(0)))


Script = Sequence[Output] | Callable[[list[Message]], Output]
"""What a fake model answers one kind of request: its outputs in order, or a function of the
messages (for rules such as "a tool result gets a reply")."""


def request_of(messages: list[Message]) -> str:
    """The person's request in a kernel prompt: the first user message, after the examples and
    the workspace view that come before it."""
    shown = next(m["content"] for m in messages if m["role"] == "user")
    return shown.rsplit("\n\n", 1)[-1]


class GatedModel:
    """A fake model for tests of jobs, apps and the scheduler. A completion is served by the
    first script whose key the request contains (the key "" matches any request). `arrived[key]`
    is set when a completion for `key` starts; `gate(key)` makes one that holds such completions
    until the test sets it. Records the keys served, the requests seen, and whether two
    completions ever ran at once."""

    name = "fake"
    context = 4096

    def __init__(self, scripts: Mapping[str, Script], *, wait: float = 60.0) -> None:
        self.scripts: dict[str, Script] = {
            key: script if callable(script) else list(script) for key, script in scripts.items()
        }
        self.wait = wait
        """Seconds a gated completion waits before the test is failed for never releasing it."""
        self.arrived: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.gates: dict[str, threading.Event] = {}
        self.served: list[str] = []
        self.requests: list[str] = []
        self.busy = 0
        self.overlapped = False
        self._count = threading.Lock()

    def gate(self, key: str) -> threading.Event:
        """Hold completions for `key` until the returned event is set."""
        return self.gates.setdefault(key, threading.Event())

    def release(self) -> None:
        """Open every gate (a test's clean-up, so no thread stays held)."""
        for gate in self.gates.values():
            gate.set()

    def complete(
        self, messages: list[Message], *, constraint: Constraint | None, max_tokens: int
    ) -> Completion:
        """The next output of the request's script, once its gate (if any) is open."""
        with self._count:
            self.busy += 1
            self.overlapped |= self.busy > 1
        try:
            request = request_of(messages)
            key = next((k for k in self.scripts if k in request), None)
            if key is None:
                raise LlmosError(ErrorCode.E_BACKEND, f"no script for the request {request!r}")
            with self._count:
                self.served.append(key)
                self.requests.append(request)
            self.arrived[key].set()
            gate = self.gates.get(key)
            if gate is not None and not gate.wait(self.wait):
                raise LlmosError(ErrorCode.E_TIMEOUT, f"the test never released {key!r}")
            script = self.scripts[key]
            if callable(script):
                return Completion(text=_text(script(messages)))
            if not script:
                raise LlmosError(ErrorCode.E_BACKEND, f"the script for {key!r} has run out")
            return Completion(text=_text(script.pop(0)))  # type: ignore[attr-defined]
        finally:
            with self._count:
                self.busy -= 1


class FakeEmbedder:
    """A deterministic embedder with no model: a text's vector is given in `vectors` (so a test
    chooses the cosines between requests), else `default`, else its letter counts, normalised.
    Records what it embedded. Drops in wherever llmos takes an embedder (the example bank,
    lessons, `fake_memory`). Its `name` is empty unless given: a named embedder's vectors are
    shared by every example bank of a process, and a fake's differ from test to test."""

    def __init__(
        self,
        vectors: Mapping[str, list[float]] | None = None,
        default: list[float] | None = None,
        *,
        name: str = "",
    ) -> None:
        self.name = name
        self.vectors = dict(vectors or {})
        self.default = default
        self.loaded = True
        """Whether the model is in memory (a test sets False to act as one still loading)."""
        self.batches: list[list[str]] = []
        self.queries: list[str] = []

    def warm(self) -> None:
        """Nothing to load."""

    def vector(self, text: str) -> list[float]:
        """The vector of `text`, recording nothing."""
        if text in self.vectors:
            return self.vectors[text]
        if self.default is not None:
            return self.default
        counts = [float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"]
        norm = sum(v * v for v in counts) ** 0.5 or 1.0
        return [v / norm for v in counts]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of a batch of texts."""
        self.batches.append(list(texts))
        return [self.vector(t) for t in texts]

    def embed_one(self, text: str) -> list[float]:
        """The vector of one query."""
        self.queries.append(text)
        return self.vector(text)


def fake_memory(home: Path, embedder: FakeEmbedder | None = None) -> Memory:
    """A memory with no embedding model: the real store (under `home`) and a real in-memory
    Chroma index, with `embedder`'s vectors (letter counts by default). For fast tests of what
    uses memory; memory's own tests use the real model."""
    from llmos.memory.index import MemoryIndex
    from llmos.memory.memory import Memory
    from llmos.memory.store import MemoryStore

    store = MemoryStore(home / "memory", encrypt=False, key_path=home / "keys" / "install.key")
    index = MemoryIndex(namespace=store.store_id, in_memory=True)
    fake = embedder or FakeEmbedder(name="letters")
    return Memory(store, index, cast("Embedder", fake))


__all__ = ["FakeEmbedder", "GatedModel", "ScriptedBackend", "fake_memory", "request_of"]
