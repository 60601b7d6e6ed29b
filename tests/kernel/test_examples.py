"""The example bank: nearest examples by embedding or by words, within a token budget, one per
call shape; built-ins validate against the live registry; plugins add theirs through the hook."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.apps.plugins import BUILTIN_EXAMPLES, build_registry
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.examples import BUILTIN, RESULT_PLACEHOLDER, Example, ExampleBank, render
from llmos.memory.embedder import Embedder
from llmos.syscalls.base import Registry
from llmos.system import System
from llmos.testing import FakeEmbedder

# Arguments other engineers are adding to syscalls that exist: an example that fails only
# because of these is pending, not wrong.
PENDING_FIELDS = {"image.thumbnail", "image.resize", "image.convert", "image.info"}
PENDING_FIELD_NAMES = {"out_dir"}


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """all-MiniLM-L6-v2, loaded once; every Embedder in this process shares the loaded model."""
    loaded = Embedder()
    loaded.load()
    return loaded


def builtin_bank(embedder: Embedder | None = None) -> ExampleBank:
    """A bank filled the way the system fills one: the built-ins through the hook."""
    bank = ExampleBank(embedder=embedder)
    build_registry(plugins=False, examples=bank)
    return bank


def words_count(text: str) -> int:
    """A stand-in token count: whitespace-separated pieces."""
    return len(text.split())


PARAPHRASES = {
    "make small previews of all the pictures in holiday": "thumbnails of every photo in pics",
    "is it going to rain on Saturday?": "what's the weather tomorrow?",
    "what's the current time in Paris?": "what's the time in London?",
    "set the port in app.cfg to 8081": "change the port in server.cfg to 9000",
    "what's 12 plus 30 plus 8?": "what is the total of 10, 25 and 7?",
    "get rid of that": "delete that",
    "how many bytes is data.bin?": "how big is backup.zip?",
    "sum the numbers in costs.txt": "add up the amounts in expenses.txt",
    "shrink every jpg in photos to 640 wide": "resize all the jpgs to 800 pixels wide into small/",
}


def test_nearest_finds_the_example_for_paraphrased_requests(embedder: Embedder) -> None:
    bank = builtin_bank(embedder)
    lexical = builtin_bank()
    found_by_words = 0
    for request, expected in PARAPHRASES.items():
        found = [e.request for e in bank.nearest(request, k=3)]
        assert expected in found, f"{request!r} -> {found}"
        found_by_words += expected in [e.request for e in lexical.nearest(request, k=3)]
    assert found_by_words < len(PARAPHRASES) - 2, "paraphrases are what the embedder is for"


def test_lexical_fallback_ranks_by_shared_words_without_an_embedder() -> None:
    bank = builtin_bank()
    assert bank.embedder is None
    cases = {
        "which logs mention a warning?": "which logs mention an error?",
        "make thumbnails of every photo in holiday": "thumbnails of every photo in pics",
        "what time is it in Paris?": "what's the time in London?",
        "copy notes.txt to backup/": "copy report.pdf to backup/",
    }
    for request, expected in cases.items():
        assert bank.nearest(request, k=1)[0].request == expected, request


def test_lexical_ranking_is_bm25_over_stemmed_words() -> None:
    bank = ExampleBank()
    bank.add("resize the photos", {"call": "image.resize", "path": "x.png", "width": 10})
    bank.add("list the folder", {"call": "fs.list"})
    assert bank.scores("resizing one photo")[0] > 0 and bank.scores("resizing one photo")[1] == 0
    assert bank.nearest("what is in this folder", k=1)[0].request == "list the folder"


def test_the_token_budget_is_respected() -> None:
    bank = builtin_bank()
    request = "copy a.txt to b/ and count its lines"
    unlimited = bank.nearest(request, k=6)
    assert len(unlimited) == 6
    full = words_count(render(unlimited))
    for budget in (full - 1, full // 2, 20, 5):
        chosen = bank.nearest(request, k=6, budget_tokens=budget, count=words_count)
        assert words_count(render(chosen)) <= budget
        assert chosen != unlimited
    assert len(bank.nearest(request, k=6, budget_tokens=20, count=words_count)) < 6
    assert bank.nearest(request, k=6, budget_tokens=full, count=words_count) == unlimited
    assert bank.nearest(request, k=6, budget_tokens=1, count=words_count) == []
    with pytest.raises(LlmosError):
        bank.nearest(request, k=2, budget_tokens=100)


def test_a_long_best_example_gives_way_to_shorter_ones_that_fit() -> None:
    bank = ExampleBank()
    long = bank.add("copy the file " + "very " * 40, {"call": "fs.copy", "src": "a", "dst": "b"})
    short = bank.add("copy the folder", {"call": "fs.list", "path": "x"})
    assert long is not None and short is not None
    assert bank.nearest("copy the file very carefully", k=2) == [long, short]
    assert bank.nearest("copy the file", k=2, budget_tokens=20, count=words_count) == [short]


def test_one_example_per_call_shape_unless_nothing_else_fits() -> None:
    bank = ExampleBank()
    first = bank.add("show me notes.txt", {"call": "fs.read", "path": "notes.txt"})
    second = bank.add("show me notes.md", {"call": "fs.read", "path": "notes.md"})
    other = bank.add("show me the folder", {"call": "fs.list", "path": "."})
    chosen = bank.nearest("show me notes", k=2)
    assert chosen == [first, other]
    assert bank.nearest("show me notes", k=3) == [first, second, other]
    shapes = [e.shape for e in builtin_bank().nearest("read todo.md", k=6)]
    assert len(set(shapes)) == len(shapes)


def test_render_matches_the_prompts_example_shape() -> None:
    one = Example("show me todo.md", [{"call": "fs.read", "path": "todo.md"}])
    assert render([one]) == 'User: show me todo.md\n{"call": "fs.read", "path": "todo.md"}'
    two = Example(
        "copy a and count",
        [{"call": "fs.copy", "src": "a", "dst": "b/"}, {"call": "reply", "text": "3 lines"}],
    )
    lines = render([one, two]).splitlines()
    assert lines[2:] == [
        "User: copy a and count",
        json.dumps({"call": "fs.copy", "src": "a", "dst": "b/"}),
        RESULT_PLACEHOLDER,
        json.dumps({"call": "reply", "text": "3 lines"}),
    ]
    assert RESULT_PLACEHOLDER == "RESULT: ..."


def test_vectors_are_embedded_once_and_new_examples_on_demand() -> None:
    fake = FakeEmbedder()
    bank = ExampleBank(embedder=fake)
    bank.add("show me todo.md", {"call": "fs.read", "path": "todo.md"})
    bank.add("hi there", {"call": "reply", "text": "Hello!"})
    bank.nearest("hello", k=1)
    bank.nearest("show todo", k=1)
    assert fake.batches == [["hi there", "show me todo.md"]]
    assert fake.queries == ["hello", "show todo"]
    bank.add("delete that", {"call": "ask", "question": "Which file?"})
    assert bank.nearest("delete it", k=1)[0].request == "delete that"
    assert fake.batches[1:] == [["delete that"]]


def test_warm_embeds_the_examples_in_the_background() -> None:
    fake = FakeEmbedder()
    bank = ExampleBank(embedder=fake)
    bank.add("show me todo.md", {"call": "fs.read", "path": "todo.md"})
    thread = bank.warm()
    assert thread is not None
    thread.join(timeout=10)
    assert fake.batches == [["show me todo.md"]]
    bank.nearest("show todo", k=1)
    assert fake.batches == [["show me todo.md"]]
    assert ExampleBank().warm() is None


def test_add_checks_and_copies_what_it_is_given() -> None:
    bank = ExampleBank()
    calls = [{"call": "fs.read", "path": "a.txt"}]
    example = bank.add("  show   a.txt ", calls)
    assert example is not None and example.request == "show a.txt"
    calls[0]["path"] = "changed"
    assert example.calls == [{"call": "fs.read", "path": "a.txt"}]
    assert bank.add("show a.txt", {"call": "fs.read", "path": "a.txt"}) is None
    for request, bad in (("", {"call": "reply", "text": "x"}), ("x", []), ("x", [{"no": 1}])):
        with pytest.raises(LlmosError) as info:
            bank.add(request, bad)
        assert info.value.code is ErrorCode.E_INVAL
    with pytest.raises(LlmosError):
        bank.add("x", {"call": "reply", "text": object()})
    assert len(bank) == 1


def pending_only(registry: Registry, call: dict[str, object]) -> bool:
    """True if `call` fails only for a syscall or argument that is not registered yet."""
    name = call["call"]
    if name not in registry:
        return True
    if name in PENDING_FIELDS:
        trimmed = {k: v for k, v in call.items() if k not in PENDING_FIELD_NAMES}
        try:
            registry.parse(trimmed)
        except LlmosError:
            return False
        return trimmed != call
    return False


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_every_builtin_example_validates_against_the_live_registry(settings: Settings) -> None:
    with System(settings, plugins=False) as system:
        registry = system.registry
        assert len(system.examples) == len(BUILTIN)
        assert {e.source for e in system.examples.examples()} == {BUILTIN_EXAMPLES}
        pending: dict[str, str] = {}
        for example in BUILTIN:
            for call in example.calls:
                try:
                    registry.parse(call)
                except LlmosError as exc:
                    assert pending_only(registry, call), f"{example.request!r}: {exc.message}"
                    pending.setdefault(example.request, f"{exc.code} {exc.message}")
        problems = system.examples.validate(registry)
        assert {e.request for e, _ in problems} == set(pending)
        shown = system.examples.ranked("anything at all", registry=registry)
        assert len(shown) == len(BUILTIN) - len(problems)
        for example in shown:
            for call in example.calls:
                registry.parse(call)
        if pending:
            warnings.warn(
                "built-in examples pending syscalls or fields not registered yet:\n"
                + "\n".join(f"{r!r}: {why}" for r, why in pending.items()),
                stacklevel=1,
            )


def test_builtins_cover_the_syscall_families() -> None:
    names = {c["call"] for e in BUILTIN for c in e.calls}
    wanted = {
        *("fs.read", "fs.list", "fs.stat", "fs.search", "fs.write", "fs.append", "fs.edit"),
        *("fs.copy", "fs.move", "fs.delete", "fs.mkdir", "calc", "reply", "ask"),
        *("image.thumbnail", "image.resize", "image.convert", "image.info"),
        *("mem.store", "mem.search"),
    }
    assert wanted <= names
    assert 40 <= len(BUILTIN) <= 60
    assert len({e.request for e in BUILTIN}) == len(BUILTIN)


GOOD = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class Jot(Syscall):
    """Jot a note down."""

    call: Literal["notes.jot"] = "notes.jot"
    text: str


@hookimpl
def register_syscalls(register):
    register(Jot, lambda call, process: {"ok": True})


@hookimpl
def register_examples(examples):
    examples.add("jot down: buy stamps", {"call": "notes.jot", "text": "buy stamps"})
    examples.rule("Quick notes the user dictates: notes.jot.")
'''

RAISES = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class Half(Syscall):
    """Registered before the examples hook fails: must be rolled back."""

    call: Literal["half.do"] = "half.do"


@hookimpl
def register_syscalls(register):
    register(Half, lambda call, process: None)


@hookimpl
def register_examples(examples):
    examples.add("do the half thing", {"call": "half.do"})
    examples.rule("Half things: half.do.")
    raise RuntimeError("examples hook exploded")
'''

UNMARKED = """
def register_examples(examples):
    examples.add("never added", {"call": "reply", "text": "no hookimpl marker"})
"""


@pytest.fixture
def example_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Three plugin apps installed as a real distribution (dist-info with entry points)."""
    site = tmp_path / "site"
    site.mkdir()
    modules = {"llmos_ex_good": GOOD, "llmos_ex_raises": RAISES, "llmos_ex_unmarked": UNMARKED}
    for module, text in modules.items():
        (site / f"{module}.py").write_text(text)
    info = site / "llmos_ex-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llmos-ex\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[llmos.apps]\n" + "".join(f"{m.split('_')[-1]} = {m}\n" for m in modules)
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in modules:
        sys.modules.pop(module, None)


def test_plugin_examples_reach_the_bank_and_a_raising_plugin_is_skipped(
    example_plugins: Path, settings: Settings
) -> None:
    with System(settings) as system:
        bank = system.examples
        sources = {e.request: e.source for e in bank.examples()}
        assert sources["jot down: buy stamps"] == "good"
        assert [(r.text, r.source) for r in bank.rules()] == [
            ("Quick notes the user dictates: notes.jot.", "good")
        ]
        assert bank.render_rules() == "- Quick notes the user dictates: notes.jot."
        assert "do the half thing" not in sources, "a failed plugin's examples are undone"
        assert "half.do" not in system.registry
        assert "never added" not in sources, "only marked hookimpls run"
        failed = {label.split(" ")[0]: why for label, why in system.plugins.failed.items()}
        assert set(failed) == {"raises"}
        assert "examples hook exploded" in failed["raises"]
        assert len(bank) == len(BUILTIN) + 1
        assert not [e for e, _ in bank.validate(system.registry) if e.source == "good"]
        lexical = ExampleBank()
        for example in bank.examples():
            lexical.add(example.request, example.calls, source=example.source)
        top = lexical.nearest("jot down: call the plumber", k=1, registry=system.registry)
        assert top[0].calls == [{"call": "notes.jot", "text": "buy stamps"}]


def test_examples_naming_unregistered_syscalls_are_never_shown() -> None:
    registry, _ = build_registry(plugins=False)
    bank = ExampleBank()
    bank.add("frobnicate x", {"call": "nope.frob", "path": "x"})
    bank.add("show x", {"call": "fs.read", "path": "x"})
    assert [e.request for e in bank.nearest("frobnicate x", k=2)] == ["frobnicate x", "show x"]
    assert [e.request for e in bank.nearest("frobnicate x", k=2, registry=registry)] == ["show x"]
    (example, why), *_ = bank.validate(registry)
    assert example.request == "frobnicate x" and why.startswith("E_NOSYS")


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_a_bank_not_ready_does_not_hold_up_a_turn(system: System) -> None:
    """The first request does not wait for the embedder: it goes without examples while the
    bank warms, and later ones get them."""
    from llmos.kernel.loop import Kernel
    from llmos.testing import ScriptedBackend

    kernel = Kernel(system, ScriptedBackend([]))
    if not system.examples.ready:
        assert kernel.examples_for("show me todo.md") == ""
    warming = system.examples.warm()
    if warming is not None:
        warming.join()
    assert system.examples.ready
    assert kernel.examples_for("show me notes.md").startswith("EXAMPLES")


def test_a_statement_ranks_statements_first_and_a_question_questions(embedder: Embedder) -> None:
    bank = ExampleBank(embedder=embedder)
    bank.add("what did I say my dog is called?", {"call": "mem.search", "query": "dog's name"})
    bank.add("my cat's name is Miso", {"call": "mem.store", "text": "The user's cat is Miso."})
    told = bank.ranked("my dog is called Rex")
    assert told[0].calls[0]["call"] == "mem.store"
    asked = bank.ranked("what is my dog called?")
    assert asked[0].calls[0]["call"] == "mem.search"


def test_only_examples_of_calls_offered_now_are_shown() -> None:
    bank = ExampleBank()
    bank.add(
        "create hello.py that prints hello", {"call": "fs.write", "path": "h.py", "content": "x"}
    )
    bank.add("hi there", {"call": "reply", "text": "Hello!"})
    assert len(bank.nearest("hello", k=2)) == 2
    shown = bank.nearest("hello", k=2, allowed=["reply", "ask"])
    assert [e.request for e in shown] == ["hi there"]


def test_the_tools_whose_descriptions_fit_a_request_are_found(embedder: Embedder) -> None:
    bank = ExampleBank(embedder=embedder)
    tools = {
        "add_numbers": "Add a list of numbers",
        "weather_forecast": "Weather forecast for a location and day",
        "send_sms": "Send a text message to a phone number",
    }
    assert bank.fitting("add 3, 4 and 5", tools, 0.35) == ["add_numbers"]
    assert bank.fitting("what's the forecast for Berlin tomorrow?", tools, 0.35) == [
        "weather_forecast"
    ]
    assert bank.fitting("sing me a song", tools, 0.35) == []
    assert ExampleBank().fitting("add 3, 4 and 5", tools, 0.35) == [], "words are no measure"


def test_each_process_sees_the_builtins_the_persons_and_only_its_own_apps_examples() -> None:
    from llmos.kernel.examples import visible

    for source in ("builtin", "taught", "good", "learned"):
        assert visible(source, "app:tidy") and visible(source, "shell")
    assert visible("app:tidy", "app:tidy") and visible("tidy", "app:tidy")
    assert not visible("app:other", "app:tidy") and not visible("notes", "app:tidy")
    assert visible("notes", "shell"), "a plugin the person loaded serves their shell"
    assert not visible("app:tidy", "shell") and not visible("app:tidy", None)
    bank = ExampleBank()
    bank.add("sweep the floor", {"call": "fs.list"}, source="app:tidy")
    bank.add("sweep the floor now", {"call": "fs.list"}, source="app:other")
    assert [e.source for e in bank.ranked("sweep the floor", viewer="app:tidy")] == ["app:tidy"]
