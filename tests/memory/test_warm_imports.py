"""Warming memory loads the embedder and the index on two threads while the caller goes on:
their first imports (sentence-transformers, chromadb, both over numpy) must not race."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import sys
from llmos.config import Settings
from llmos.system import System

with System(Settings(home=sys.argv[1]), plugins=False) as system:
    system.memory.warm()
    import numpy  # the caller goes on with its own work meanwhile

    system.memory.store("The spare key is under the blue flowerpot.")
    hits = system.memory.search("where is the spare key?")
    print("found" if hits and "flowerpot" in hits[0].text else f"missing {hits!r}")
"""


@pytest.mark.slow
@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_warming_memory_while_the_caller_imports_loses_nothing(tmp_path: Path) -> None:
    """Without one lock over the heavy first imports, numpy was left half-initialised
    (ImportError, then RecursionError on every later load) and memory broke for the session."""
    for attempt in range(2):
        home = tmp_path / f"home{attempt}"
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(home)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LLMOS_HOME": str(home)},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == "found", out.stderr[-2000:]
        assert "not ready" not in out.stderr and "did not load" not in out.stderr, out.stderr
