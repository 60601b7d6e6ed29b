"""The kernel with the real small model (Qwen2.5-Coder-0.5B, assembled from its packages)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.kernel.backend import Completion, LlamaCppBackend, Message
from llmos.kernel.grammar import Constraint
from llmos.kernel.loop import Conversation, Event, Kernel
from llmos.kernel.models import find_source, pull
from llmos.system import System


@pytest.fixture(scope="session")
def small_model() -> Path:
    """The 0.5B GGUF, assembled once into the virtual environment (not the user's home)."""
    source = find_source("small")
    try:
        return pull(source, Path(sys.prefix) / "llmos-test-home")
    except Exception as exc:  # the chunk packages are installed by ./setup.sh
        pytest.fail(f"the small model is not installed: {exc}")


@pytest.fixture(scope="session")
def backend(small_model: Path) -> Iterator[LlamaCppBackend]:
    """One loaded model for the whole session."""
    yield LlamaCppBackend(small_model, n_ctx=4096)


def turn(system: System, backend: LlamaCppBackend, workspace: Path, request: str) -> list[Event]:
    kernel = Kernel(system, backend, max_steps=4)
    return list(kernel.turn(system.spawn("it", workspace), Conversation(), request))


def calls(events: list[Event]) -> list[dict[str, object]]:
    return [e.call for e in events if e.kind == "call" and e.call]


def test_file_task_end_to_end(system: System, backend: LlamaCppBackend, workspace: Path) -> None:
    (workspace / "server.cfg").write_text("port = 9090\n")
    events = turn(system, backend, workspace, "show me server.cfg")
    first = calls(events)[0]
    assert first["call"] == "fs.read" and str(first["path"]).endswith("server.cfg")
    results = [e.result for e in events if e.kind == "result" and e.result is not None]
    assert results and results[0].ok and "9090" in results[0].render()


def test_permission_error_goes_back_to_the_model(
    system: System, backend: LlamaCppBackend, workspace: Path
) -> None:
    events = turn(system, backend, workspace, "read /etc/hostname")
    results = [e.result for e in events if e.kind == "result" and e.result is not None]
    assert results and results[0].code == "E_PERM"
    assert len(calls(events)) >= 2, "the kernel took another step after the E_PERM result"
    assert not any(r.ok and "hostname" in r.render() for r in results[1:])


class Unconstrained:
    """The real model with no grammar, as a server without grammar support would behave."""

    def __init__(self, inner: LlamaCppBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.raw: list[str] = []

    def complete(
        self,
        messages: list[Message],
        *,
        constraint: Constraint | None,
        max_tokens: int,
    ) -> Completion:
        out = self.inner.complete(messages, constraint=None, max_tokens=max_tokens)
        self.raw.append(out.text)
        return out


def test_unconstrained_output_is_repaired_or_retried(
    system: System, backend: LlamaCppBackend, workspace: Path
) -> None:
    (workspace / "todo.txt").write_text("buy milk\n")
    loose = Unconstrained(backend)
    kernel = Kernel(system, loose, max_steps=2)
    conv = Conversation()
    conv.add("user", "print todo.txt")
    call, _ = kernel.decide(conv)
    assert call.call == "fs.read"
    assert loose.raw, "the model was asked"
