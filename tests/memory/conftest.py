"""Memory fixtures: the real embedding model, loaded once per session, and a real store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.config import Settings
from llmos.memory.embedder import Embedder
from llmos.memory.memory import Memory
from llmos.memory.store import MemoryStore


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """all-MiniLM-L6-v2, loaded once; every Embedder in this process shares the loaded model."""
    loaded = Embedder()
    loaded.load()
    return loaded


@pytest.fixture
def store(llmos_home: Path) -> Iterator[MemoryStore]:
    """A plain (unencrypted) store under the test's LLMOS_HOME."""
    with MemoryStore(llmos_home / "memory", key_path=llmos_home / "keys" / "memory.key") as s:
        yield s


@pytest.fixture
def memory(settings: Settings, embedder: Embedder) -> Iterator[Memory]:
    """The test installation's memory with a local Chroma index."""
    with Memory.open(settings) as mem:
        yield mem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unused_port() -> int:
    """A local TCP port nothing listens on."""
    return free_port()


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A real Chroma server (`chroma run`) on a free local port."""
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(exe).exists():
        pytest.skip("the chroma CLI is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            exe,
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.skip("chroma run did not start")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
