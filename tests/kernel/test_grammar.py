"""The grammar is generated from the live table and compiles in llama.cpp."""

from __future__ import annotations

from typing import Literal

from llmos.apps.plugins import build_registry
from llmos.kernel.grammar import GrammarCache, build_grammar
from llmos.syscalls.base import Syscall


class Ping(Syscall):
    """Ping a host name."""

    call: Literal["net.ping"] = "net.ping"
    host: str
    count: int | None = None


def test_grammar_covers_exactly_the_registered_calls() -> None:
    registry, _ = build_registry(plugins=False)
    text = build_grammar(registry)
    for name in registry.names():
        assert f'"\\"{name}\\""' in text
    assert "net.ping" not in text


def test_grammar_is_rebuilt_only_when_the_table_changes() -> None:
    registry, _ = build_registry(plugins=False)
    cache = GrammarCache(registry)
    first = cache.text()
    assert cache.text() is first
    registry.register(Ping, lambda call, process: None)
    second = cache.text()
    assert second is not first and "net.ping" in second
    registry.unregister("net.ping")
    assert "net.ping" not in cache.text()


def test_llama_cpp_compiles_the_grammar() -> None:
    from llama_cpp import LlamaGrammar

    registry, _ = build_registry(plugins=False)
    registry.register(Ping, lambda call, process: None)
    grammar = LlamaGrammar.from_string(build_grammar(registry), verbose=False)
    assert grammar is not None
