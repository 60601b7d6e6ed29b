"""Long-term memory: a durable SQLite store, a rebuildable Chroma index, and the embedder.

The package imports nothing heavy: `llmos.memory.memory.Memory` is the facade, opened per
installation by `System.memory`; the store, index and embedder modules sit beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmos.config import Settings


def reindex(settings: Settings) -> int:
    """Rebuild the memory index of `settings.home` from its store (`llmos mem reindex`);
    returns how many records were indexed. Fails fast (E_IO) while another process has it."""
    from llmos.memory.memory import Memory

    with Memory.open(settings) as memory:
        return memory.reindex()
