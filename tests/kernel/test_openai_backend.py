"""The server backend against a real OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`) on the 0.5B model, held to one syscall by the GBNF."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.bench.sched import start_model_server
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import open_backend
from llmos.kernel.loop import Conversation, Kernel
from llmos.kernel.server import OpenAIBackend
from llmos.system import System

SLOW_PREFILL_S = 600.0
"""Seconds one request may take: the kernel's prompt on a 2-core machine that is busy with
other tests can take over the backend's default 120 s."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(small_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on the small model; its /v1 base URL."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, base = start_model_server(small_model, 4096, log=log, timeout=120)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_a_turn_runs_through_the_server_held_to_one_syscall(
    server: str, system: System, workspace: Path
) -> None:
    (workspace / "notes.txt").write_text("the boiler is serviced in May")
    system.examples.embedder = None  # rank examples by words: no embedder to load
    proc = system.spawn("shell", workspace)
    backend = OpenAIBackend(server, timeout=SLOW_PREFILL_S)
    events = list(Kernel(system, backend).turn(proc, Conversation(), "what is in notes.txt?"))
    calls = [e.call for e in events if e.kind == "call" and e.call is not None]
    said = [(e.kind, e.text) for e in events]
    assert all(system.registry.parse(call) for call in calls), "each output one valid syscall"
    assert any(c["call"] == "fs.read" and c["path"] == "notes.txt" for c in calls), said
    assert events[-1].kind in ("reply", "ask"), [(e.kind, e.text) for e in events]


def test_the_settings_open_the_server_backend(server: str, settings: Settings) -> None:
    opened = open_backend(settings.model_copy(update={"server": server, "n_ctx": 2048}))
    assert isinstance(opened, OpenAIBackend) and opened.constrain == "grammar"
    assert opened.context == 2048
    reply = opened.complete([{"role": "user", "content": "Say hi."}], constraint=None, max_tokens=4)
    assert reply.text and reply.completion_tokens > 0


def test_a_server_that_is_not_there_is_a_backend_error() -> None:
    with pytest.raises(LlmosError) as out:
        OpenAIBackend(f"http://127.0.0.1:{_free_port()}/v1", timeout=5).complete(
            [{"role": "user", "content": "hi"}], constraint=None, max_tokens=4
        )
    assert out.value.code is ErrorCode.E_BACKEND and "127.0.0.1" in out.value.message


def test_a_server_that_drops_the_connection_mid_request_is_a_backend_error() -> None:
    """The server accepts, reads the request, then hangs up without answering (a crash or a
    restart): a clear E_BACKEND, not a traceback."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        with pytest.raises(LlmosError) as out:
            OpenAIBackend(f"http://127.0.0.1:{port}/v1", timeout=5).complete(
                [{"role": "user", "content": "hi"}], constraint=None, max_tokens=4
            )
    finally:
        listener.close()
    assert out.value.code is ErrorCode.E_BACKEND and "127.0.0.1" in out.value.message
