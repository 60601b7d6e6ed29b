"""The grammar is generated from the live table and compiles in llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args, get_origin

from llmos.apps.plugins import build_registry
from llmos.kernel.grammar import CallFormat, GrammarCache, build_grammar, ordered_fields
from llmos.syscalls.base import Registry, Syscall
from llmos.system import System


class Ping(Syscall):
    """Ping a host name."""

    call: Literal["net.ping"] = "net.ping"
    host: str
    count: int | None = None


def test_grammar_covers_exactly_the_registered_calls() -> None:
    registry, _ = build_registry(plugins=False)
    text = build_grammar(registry)
    for name in registry.names():
        assert f'"{{\\"call\\": \\"{name}\\""' in text
    assert "net.ping" not in text


def test_grammar_is_rebuilt_only_when_the_table_changes() -> None:
    registry, _ = build_registry(plugins=False)
    cache = GrammarCache(registry)
    first = cache.constraint()
    assert cache.constraint() is first
    registry.register(Ping, lambda call, process: None)
    second = cache.constraint()
    assert second is not first and "net.ping" in second.grammar
    registry.unregister("net.ping")
    assert "net.ping" not in cache.constraint().grammar


def test_llama_cpp_compiles_the_grammar(small_model: Path) -> None:
    """Compiled for real, against the small model's vocabulary: `LlamaGrammar.from_string`
    only keeps the text, the sampler is where llama.cpp parses it."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(small_model), vocab_only=True, verbose=False)._model.vocab

    def compiles(grammar: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
        return bool(sampler)

    registry, _ = build_registry(plugins=False)
    registry.register(Ping, lambda call, process: None)
    grammar = build_grammar(registry)
    assert compiles(grammar)
    assert not compiles(grammar.replace("root ::= ", "root ::= no-such-rule | ", 1)), (
        "a broken grammar must fail, or this test proves nothing"
    )


def _valid_calls(registry: Registry) -> list[str]:
    """One call per syscall with every argument, and one with only the required ones, written
    in grammar order with json.dumps's separators."""
    samples = {"str": 'a "quoted" b', "int": 12, "bool": True, "list": ["x", "y"]}
    out = []
    for spec in registry.specs():
        full: dict[str, object] = {"call": spec.name}
        required: dict[str, object] = {"call": spec.name}
        for key, field in ordered_fields(spec):
            options = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            kind = str(field.annotation)
            value: object = (
                options[-1]
                if options
                else samples["int"]
                if "int" in kind
                else samples["bool"]
                if "bool" in kind
                else samples["list"]
                if "list" in kind
                else samples["str"]
            )
            full[key] = value
            if field.is_required():
                required[key] = value
        out += [json.dumps(full), json.dumps(required)]
    return out


def test_forced_text_is_always_what_a_valid_call_continues_with() -> None:
    registry, _ = build_registry(plugins=False)
    registry.register(Ping, lambda call, process: None)
    fmt = CallFormat.from_registry(registry)
    forced_total = 0
    for text in _valid_calls(registry):
        for cut in range(len(text)):
            forced, done = fmt.forced(text[:cut])
            assert text[cut:].startswith(forced), (text[:cut], forced)
            assert done == (text[:cut] + forced == text), (text, cut)
            forced_total += len(forced)
        assert fmt.forced(text) == ("", True)
    assert forced_total > 0


def test_forced_text_fills_the_head_names_and_required_keys() -> None:
    registry, _ = build_registry(plugins=False)
    registry.register(Ping, lambda call, process: None)
    fmt = CallFormat.from_registry(registry)
    assert fmt.forced("") == ('{"call": "', False)
    assert fmt.forced('{"call": "net.p') == ('ing", "host":', False)
    assert fmt.forced('{"call": "net.ping", "host": "h"') == ("", False)
    assert fmt.forced('{"call": "net.ping", "host": "h", "c') == ('ount":', False)
    assert fmt.forced('{"call": "net.ping", "host": "h", "count": 3') == ("", False)
    assert fmt.forced('{"call": "net.ping", "host": "h", "count": 3}') == ("", True)
    assert fmt.forced('{"call": "fs.list", "path": "a",') == (' "', False)
    assert fmt.forced('{"call": "fs.list", "path": "a", "r') == ('ecursive":', False)
    assert fmt.forced('{"call": "reply", "text": "ok"}') == ("", True)
    assert fmt.forced('{"call": "fs.write", "path": "a", "content": "b", "mode": "c') == (
        'reate"}',
        True,
    )


def test_one_of_fields_are_a_choice_in_the_grammar() -> None:
    class Forget(Syscall):
        """Forget by id or query."""

        one_of = ("id", "query")

        call: Literal["t.forget"] = "t.forget"
        id: str | None = None
        query: str | None = None

    registry, _ = build_registry(plugins=False)
    registry.register(Forget, lambda call, process: None)
    rule = next(r for r in build_grammar(registry).splitlines() if r.startswith("call-t-forget"))
    assert '( ", \\"id\\": " (string) | ", \\"query\\": " (string) )' in rule
    assert ")?" not in rule, "neither may be left out"


def test_the_format_forces_whole_word_parts_of_a_name_not_half_words() -> None:
    registry, _ = build_registry(plugins=False)
    fmt = CallFormat.from_registry(registry)
    forced, _ = fmt.forced('{"call": "me')
    assert forced == "m", "mem.search, mem.store and mem.forget share 'mem', not 'mem.s'"
    forced, _ = fmt.forced('{"call": "mem')
    assert forced == "", "the model's own token is '.store': forcing '.' alone would split it"
    forced, _ = fmt.forced('{"call": "mem.st')
    assert forced.startswith('ore", "text"'), "once one name is left, the rest of it"


def test_a_constraint_that_leaves_calls_out_lets_the_model_name_any() -> None:
    from llmos.kernel.grammar import wanted_name

    registry, _ = build_registry(plugins=False)
    cache = GrammarCache(registry)
    assert cache.constraint().names is None, "every call offered: nothing to ask first"
    limited = cache.constraint(None, ["reply", "ask"])
    assert limited.callable == ["reply", "ask"]
    assert limited.names is not None
    assert set(limited.names.callable) == {s.name for s in registry.specs()}
    assert cache.constraint(None, ["reply", "ask"], probe=False).names is None
    assert cache.constraint(None, ["reply", "ask"]) is limited, "kept, not rebuilt"
    assert wanted_name('{"call": "fs.move"}') == "fs.move" and wanted_name("{") == ""


def test_the_names_grammar_compiles_in_llama_cpp() -> None:
    import llama_cpp

    from llmos.kernel.grammar import names_constraint

    grammar = names_constraint(["fs.read", "reply", "mem.store"]).grammar
    assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None


def test_a_fixed_field_is_left_to_its_default_by_the_kernel(system: System) -> None:
    # The model wrote max_hits=1 for "which log files mention an error?" and saw one line.
    from llmos.kernel.prompt import signature

    spec = system.registry.get("fs.search")
    assert spec is not None
    # Then it wrote regex=true for 'wifi password cabin', a phrase no line holds as written.
    for knob in ("max_hits", "regex"):
        assert knob not in build_grammar(system.registry)
        assert knob not in signature(spec)
        assert knob in spec.model.model_fields, "a direct call may still set it"


def test_a_constraint_survives_the_trip_to_another_process(system: System) -> None:
    """`llmos eval` through `llmos serve` sends each step's constraint as JSON: the daemon's
    copy has the same grammar, shapes and names-only probe, so it decodes the same."""
    import json

    from llmos.kernel.grammar import constraint_data, constraint_from_data

    original = GrammarCache(system.registry).constraint(only=["fs.read", "reply", "calc"])
    copy = constraint_from_data(json.loads(json.dumps(constraint_data(original))))
    assert copy.grammar == original.grammar and copy.schema == original.schema
    assert copy.format.shapes == original.format.shapes
    assert copy.names is not None and original.names is not None
    assert copy.names.grammar == original.names.grammar
    text = '{"call": "fs.read", "path": "a'
    assert copy.format.forced(text) == original.format.forced(text)
