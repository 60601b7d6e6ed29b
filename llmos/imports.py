"""One lock over the first import of the heavy native packages (sentence-transformers, chromadb,
llama.cpp): they load on background threads at start-up, and two of them importing numpy's tree
at once left numpy half-initialised (an ImportError, then a RecursionError on every later load),
so memory stayed broken for the session. Imports hold the GIL, so serialising them costs little."""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_LOCK = threading.RLock()


def heavy(name: str) -> ModuleType:
    """The module `name`, imported (the first time) while no other heavy import runs."""
    with _LOCK:
        return importlib.import_module(name)
