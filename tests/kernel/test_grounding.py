"""Grounded paths: the workspace snapshot, the view shown with a request, and a grammar that
lets arguments reading an existing path name only real ones (or the request's own)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import pytest

from llmos.kernel.grammar import CallFormat, GrammarCache, build_grammar
from llmos.kernel.grounding import (
    Snapshot,
    folder_words,
    has_extension,
    into_folders,
    mentioned_paths,
    scan,
    view,
)
from llmos.kernel.loop import Conversation, Kernel
from llmos.security.workspace import Workspace
from llmos.syscalls.base import Registry, Syscall, existing_path
from llmos.syscalls.context import Process
from llmos.system import System
from llmos.testing import ScriptedBackend


class Peek(Syscall):
    """Read a file."""

    call: Literal["t.peek"] = "t.peek"
    path: str = existing_path("file")


class Look(Syscall):
    """List a folder, or the files a pattern matches."""

    call: Literal["t.look"] = "t.look"
    path: str = existing_path("dir", patterns=True, default=".")


class Note(Syscall):
    """Write a new file."""

    call: Literal["t.note"] = "t.note"
    path: str


def registry() -> Registry:
    reg = Registry()
    for model in (Peek, Look, Note):
        reg.register(model, lambda call, process: None)
    return reg


def make_tree(root: Path) -> None:
    (root / "notes.txt").write_text("The wifi password for the cabin is larch-7731.\n")
    (root / "logs").mkdir()
    for n in (1, 2, 3):
        (root / "logs" / f"app{n}.log").write_text("error\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("x")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "dep.js").write_text("x")


def test_scan_lists_real_files_and_folders_not_hidden_or_caches(workspace: Path) -> None:
    make_tree(workspace)
    os.symlink("/etc/hostname", workspace / "outside")
    snap = scan(Workspace(workspace))
    assert snap.files() == ["logs/app1.log", "logs/app2.log", "logs/app3.log", "notes.txt"]
    assert snap.dirs() == [".", "logs"]
    assert snap.complete


def test_scan_of_a_big_workspace_keeps_the_names_nearest_the_request(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmos.kernel.grounding as grounding

    monkeypatch.setattr(grounding, "GROUND_MAX_PATHS", 5)
    for n in range(20):
        (workspace / f"file{n:02d}.txt").write_text("x")
    (workspace / "budget-2026.xlsx").write_text("x")
    snap = scan(Workspace(workspace), "what is in the budget for 2026?")
    assert len(snap.entries) == 5 and not snap.complete
    assert "budget-2026.xlsx" in snap.files()
    assert view(snap).endswith(", ...")


def test_mentioned_paths_are_the_path_like_words_of_a_request() -> None:
    said = "copy notes.txt to backup/notes.txt, then read /etc/hostname and docs/."
    assert mentioned_paths(said) == ["notes.txt", "backup/notes.txt", "/etc/hostname", "docs/"]
    assert mentioned_paths("what is the wifi password for the cabin?") == []


def test_view_is_short_and_shows_folders_with_their_contents(workspace: Path) -> None:
    make_tree(workspace)
    text = view(scan(Workspace(workspace)))
    assert text == "WORKSPACE: logs/, logs/app1.log, logs/app2.log, logs/app3.log, notes.txt"
    assert view(Snapshot()) == "WORKSPACE: (empty)"


def test_grounded_grammar_offers_only_real_paths_for_reading(workspace: Path) -> None:
    make_tree(workspace)
    snap = scan(Workspace(workspace), "read missing.txt")
    text = build_grammar(registry(), ground=snap)
    peek = next(line for line in text.splitlines() if line.startswith("call-t-peek"))
    assert "ground-file" in peek and "string" not in peek
    files = next(line for line in text.splitlines() if line.startswith("ground-file ::="))
    for path in ("notes.txt", "logs/app1.log", "missing.txt"):
        assert f'\\"{path}\\"' in files
    assert 'logs\\"' not in files, "a folder is not a file"
    note = next(line for line in text.splitlines() if line.startswith("call-t-note"))
    assert "string" in note, "a new file's path stays free"
    look = next(line for line in text.splitlines() if line.startswith("call-t-look"))
    assert "ground-dir" in look and "glob" not in look, "one file asked for: no pattern"
    many = build_grammar(registry(), ground=scan(Workspace(workspace), "list all the logs"))
    look = next(line for line in many.splitlines() if line.startswith("call-t-look"))
    assert "ground-dir-or-glob" in look, "many asked for: a pattern too"


def test_a_call_with_nothing_real_to_read_is_not_offered(workspace: Path) -> None:
    text = build_grammar(registry(), ground=scan(Workspace(workspace), "hello"))
    root = text.splitlines()[0]
    assert "call-t-peek" not in root and "call-t-note" in root
    assert "call-t-look" in root, "the root folder is always there to list"
    assert "call-t-peek" in build_grammar(registry()).splitlines()[0], "ungrounded: all"


def test_grounded_grammar_compiles_in_llama_cpp(workspace: Path) -> None:
    import llama_cpp

    make_tree(workspace)
    (workspace / "ünïcode name.md").write_text("x")
    text = build_grammar(registry(), ground=scan(Workspace(workspace), "open /etc/passwd"))
    grammar = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
    assert grammar is not None


def test_the_format_finishes_a_path_once_it_is_unambiguous(workspace: Path) -> None:
    make_tree(workspace)
    fmt = CallFormat.from_registry(registry(), scan(Workspace(workspace)))
    forced, _ = fmt.forced('{"call": "t.peek", "path": "no')
    assert forced == 'tes.txt"}'
    forced, _ = fmt.forced('{"call": "t.peek", "path": "logs/app')
    assert forced == ""
    assert "t.peek" not in CallFormat.from_registry(registry(), Snapshot()).shapes


def test_the_constraint_is_rebuilt_only_when_the_paths_change(workspace: Path) -> None:
    make_tree(workspace)
    cache = GrammarCache(registry())
    ws = Workspace(workspace)
    first = cache.constraint(scan(ws))
    (workspace / "notes.txt").write_text("longer now, same name\n")
    assert cache.constraint(scan(ws)) is first
    (workspace / "new.txt").write_text("x")
    assert cache.constraint(scan(ws)) is not first


def test_each_step_is_grounded_and_the_view_comes_with_the_request(
    system: System, proc: Process, workspace: Path
) -> None:
    make_tree(workspace)
    backend = ScriptedBackend(
        [
            {"call": "fs.write", "path": "todo.md", "content": "x"},
            {"call": "reply", "text": "done"},
        ]
    )
    kernel = Kernel(system, backend, example_count=0)
    conv = Conversation()
    list(kernel.turn(proc, conv, "make a todo"))
    first = backend.prompts[0]
    assert first[-1]["content"].startswith("WORKSPACE: logs/, ")
    assert first[-1]["content"].endswith("make a todo")
    grammars = [c.grammar for c in backend.constraints if c is not None]
    assert '\\"todo.md\\"' not in grammars[0] and '\\"todo.md\\"' in grammars[1]
    backend.outputs += [{"call": "reply", "text": "ok"}, {"call": "reply", "text": "bye"}]
    list(kernel.turn(proc, conv, "thanks"))
    assert "todo.md\n\nthanks" in backend.prompts[-1][-1]["content"], "it changed: shown"
    list(kernel.turn(proc, conv, "bye"))
    assert backend.prompts[-1][-1]["content"] == "bye", "unchanged: not shown again"


def test_a_failed_guess_does_not_stay_in_the_conversation(
    system: System, proc: Process, workspace: Path
) -> None:
    backend = ScriptedBackend(
        [
            {"call": "fs.read", "path": "cabin/wifi/password.txt"},
            {"call": "ask", "question": "Which file?"},
        ]
    )
    kernel = Kernel(system, backend)
    conv = Conversation()
    list(kernel.turn(proc, conv, "what is the wifi password?"))
    shown = json.dumps(kernel.messages(conv))
    assert "cabin/wifi" not in shown
    assert [m["role"] for m in conv.turns[0].messages] == ["user", "assistant"]


class Scrub(Syscall):
    """Delete a file."""

    changes_files = True
    call: Literal["t.scrub"] = "t.scrub"
    path: str = existing_path("file")


def test_a_request_that_asks_for_no_change_cannot_change_files(workspace: Path) -> None:
    make_tree(workspace)
    reg = registry()
    reg.register(Scrub, lambda call, process: None)
    ws = Workspace(workspace)
    question = build_grammar(reg, ground=scan(ws, "summarise notes.txt")).splitlines()[0]
    assert "call-t-scrub" not in question and "call-t-peek" in question
    asked = build_grammar(reg, ground=scan(ws, "delete notes.txt")).splitlines()[0]
    assert "call-t-scrub" in asked
    target = build_grammar(reg, ground=scan(ws, "summarise notes.txt into short.txt"))
    assert "call-t-scrub" in target.splitlines()[0], "a new path named is a target"


def test_calc_can_be_given_only_arithmetic(system: System) -> None:
    """The calc field brings its own grammar: what the model writes there parses as an
    expression, so "time zone('Tokyo')" or "sum(scores.csv)" cannot come out."""
    import llama_cpp

    text = build_grammar(system.registry)
    assert "calc-expr" in next(line for line in text.splitlines() if line.startswith("call-calc"))
    assert llama_cpp.LlamaGrammar.from_string(text, verbose=False) is not None


def test_a_destroying_call_takes_only_paths_the_person_named(workspace: Path) -> None:
    (workspace / "backup-jan.zip").write_text("j")
    (workspace / "backup-feb.zip").write_text("f")
    (workspace / "todo.txt").write_text("x")
    reg = registry()
    reg.register(Scrub, lambda call, process: None)

    class Wipe(Syscall):
        """Delete files."""

        changes_files = True
        call: Literal["t.wipe"] = "t.wipe"
        path: str = existing_path("any", patterns=True, named=True)

    reg.register(Wipe, lambda call, process: None)
    ws = Workspace(workspace)
    vague = build_grammar(reg, ground=scan(ws, "remove the backup")).splitlines()[0]
    assert "call-t-wipe" not in vague, "no file named, no glob asked for: nothing to delete"
    said = "show me todo.txt\ndelete it"
    named = scan(ws, "delete it", said=said)
    assert named.named == ("todo.txt",)
    rule = next(
        line
        for line in build_grammar(reg, ground=named).splitlines()
        if line.startswith("ground-named ::=")
    )
    assert '\\"todo.txt\\"' in rule and "backup" not in rule
    every = build_grammar(reg, ground=scan(ws, "delete all the backups")).splitlines()
    assert "call-t-wipe" in every[0] and "ground-named-or-glob" in "\n".join(every)


def test_a_search_of_files_is_not_offered_in_an_empty_workspace(
    system: System, workspace: Path
) -> None:
    ws = Workspace(workspace)
    empty = build_grammar(system.registry, ground=scan(ws, "which train do I take?"))
    assert "call-fs-search" not in empty.splitlines()[0]
    assert "call-mem-search" in empty.splitlines()[0]
    (workspace / "notes.txt").write_text("Take the 8:15 train.\n")
    full = build_grammar(system.registry, ground=scan(ws, "which train do I take?"))
    assert "call-fs-search" in full.splitlines()[0]


def test_folder_words_are_the_names_a_request_calls_a_folder() -> None:
    assert folder_words("what's in the downloads folder?") == ["downloads"]
    assert folder_words("list src") == ["src"]
    assert folder_words("create a directory called backups") == ["backups"]
    assert folder_words("mkdir -p build") == ["build"]
    for vague in ("list the files", "make a new folder", "which folder has my notes"):
        assert folder_words(vague) == [], vague
    assert has_extension("docs/intro.md") and not has_extension("docs/2024")
    assert not has_extension("old/")


def test_a_named_path_is_offered_only_as_what_it_can_be(workspace: Path) -> None:
    ws = Workspace(workspace)
    snap = scan(ws, "show me docs/intro.md and old/")
    assert "docs/intro.md" in snap.choices("file") and "docs/intro.md" not in snap.choices("dir")
    assert "old/" in snap.choices("dir") and "old/" not in snap.choices("file")
    folder = scan(ws, "what's in the downloads folder?")
    assert "downloads" in folder.choices("dir") and "downloads" not in folder.choices("file")
    assert snap.choices("file", real_only=True) == []


def test_in_an_empty_workspace_file_calls_wait_for_a_request_about_files(
    system: System, workspace: Path
) -> None:
    ws = Workspace(workspace)
    for chat in ("hello", "which train do I take?", "text Bo that I am late"):
        root = build_grammar(system.registry, ground=scan(ws, chat)).splitlines()[0]
        for call in ("fs-list", "fs-stat", "fs-read", "image-info"):
            assert f"call-{call}" not in root, (chat, call)
        assert "call-reply" in root
        assert ("call-mem-search" in root) == (chat != "hello"), chat
    for about in (
        "what files do I have",
        "print notes.txt",
        "search my files for invoice",
        "find the word invoice",  # an order: its verb is about files
        "which documents mention the budget?",  # a question with a file noun
    ):
        root = build_grammar(system.registry, ground=scan(ws, about)).splitlines()[0]
        assert "call-fs-list" in root, about
    for asked in ("When did Gina open her store?", "What did Gina find for her store?"):
        # a question's verb alone is not about files when there are none
        root = build_grammar(system.registry, ground=scan(ws, asked)).splitlines()[0]
        assert "call-fs-search" not in root and "call-mem-search" in root, asked
    (workspace / "a.txt").write_text("x")
    root = build_grammar(system.registry, ground=scan(ws, "hello")).splitlines()[0]
    assert "call-fs-list" in root, "a workspace with files: they may hold the answer"


def test_an_append_or_edit_takes_only_a_file_that_is_there(system: System, workspace: Path) -> None:
    ws = Workspace(workspace)
    new = build_grammar(system.registry, ground=scan(ws, "put 'hello' in a.txt")).splitlines()
    assert "call-fs-append" not in new[0] and "call-fs-edit" not in new[0]
    assert "call-fs-write" in new[0], "a file that is not there is written"
    (workspace / "todo.md").write_text("- milk\n")
    text = build_grammar(system.registry, ground=scan(ws, "add eggs to todo.md and a.txt"))
    assert "call-fs-append" in text.splitlines()[0]
    real = next(line for line in text.splitlines() if line.startswith("ground-file-real ::="))
    assert '\\"todo.md\\"' in real and "a.txt" not in real


def test_a_folder_is_made_only_when_one_is_spoken_of(system: System, workspace: Path) -> None:
    ws = Workspace(workspace)

    def offered(request: str) -> bool:
        root = build_grammar(system.registry, ground=scan(ws, request)).splitlines()[0]
        return "call-fs-mkdir" in root

    assert not offered("create notes/ideas.md with the text: build a boat")
    assert offered("create a directory called backups")
    assert offered("create docs/2024")
    assert offered("make old/")


def test_a_move_into_a_folder_the_request_names_goes_into_it(workspace: Path) -> None:
    from llmos.syscalls.fs import FsMove

    (workspace / "todo.txt").write_text("x")
    ws = Workspace(workspace)
    snap = scan(ws, "move it into the done folder")
    moved = into_folders(FsMove(src="todo.txt", dst="done"), snap)
    assert isinstance(moved, FsMove) and moved.dst == "done/"
    plain = scan(ws, "rename todo.txt to done")
    assert into_folders(FsMove(src="todo.txt", dst="done"), plain).dst == "done"  # type: ignore[attr-defined]
    (workspace / "done").write_text("a file")
    taken = scan(ws, "move it into the done folder")
    assert into_folders(FsMove(src="todo.txt", dst="done"), taken).dst == "done"  # type: ignore[attr-defined]


def search_rule(system: System, ws: Workspace, request: str) -> str:
    """The fs.search rule of the kernel's grammar for `request` on `ws`."""
    grammar = build_grammar(system.registry, ground=scan(ws, request))
    return next(line for line in grammar.splitlines() if line.startswith("call-fs-search ::="))


def test_a_search_is_narrowed_only_to_a_place_the_person_named(
    system: System, workspace: Path
) -> None:
    make_tree(workspace)
    ws = Workspace(workspace)

    # "the cabin" names no folder: a small model scoped this search to logs/ and found nothing.
    anywhere = search_rule(system, ws, "what is the wifi password for the cabin?")
    assert '\\"path\\"' not in anywhere, "the whole workspace is searched"
    assert '\\"query\\"' in anywhere
    named = build_grammar(system.registry, ground=scan(ws, "search the logs folder for errors"))
    search = next(line for line in named.splitlines() if line.startswith("call-fs-search ::="))
    assert '\\"path\\"' in search and "ground-named-dir" in search
    rule = next(line for line in named.splitlines() if line.startswith("ground-named-dir ::="))
    assert '\\"logs\\"' in rule and "notes.txt" not in rule
    # A file the person names is read, not searched inside: never a search's scope.
    file_named = scan(ws, "search notes.txt and the logs folder for the password")
    assert file_named.named_of("dir") == ["logs"]
    assert set(file_named.named_of("any")) == {"notes.txt", "logs"}


def test_a_search_is_narrowed_by_a_glob_only_when_the_request_asks_about_many_files(
    system: System, workspace: Path
) -> None:
    make_tree(workspace)
    ws = Workspace(workspace)

    assert '\\"pattern\\"' not in search_rule(
        system, ws, "what is the wifi password for the cabin?"
    )
    assert '\\"pattern\\"' in search_rule(system, ws, "which log files mention an error?")
    assert '\\"pattern\\"' in build_grammar(system.registry), "no snapshot: no limit"


def test_memory_is_searched_only_for_a_request_that_may_be_about_it(
    system: System, workspace: Path
) -> None:
    ws = Workspace(workspace)
    for request in ("sing me a song", "hello", "write a haiku about rain"):
        snap = scan(ws, request)
        assert not snap.about_memory, request
        assert "call-mem-search" not in build_grammar(system.registry, ground=snap).splitlines()[0]
    for request in (
        "which train do I take?",
        "remind me of the project codename",
        "my locker number, please",
        "find Bob's phone number",
    ):
        snap = scan(ws, request)
        assert snap.about_memory, request
        assert "call-mem-search" in build_grammar(system.registry, ground=snap).splitlines()[0]


def test_the_grammar_and_the_forced_text_come_from_one_shape(
    system: System, workspace: Path
) -> None:
    """Each call's GBNF rule names exactly the keys the decoder's format may force: an
    argument the snapshot leaves nothing to fill (a folder to search, in a workspace with no
    folder the request names) is gone from both, not just from the grammar."""
    make_tree(workspace)
    ws = Workspace(workspace)
    for request in ["hello", "search the notes for eggs", "delete all the logs", "rename a.txt"]:
        constraint = GrammarCache(system.registry).constraint(scan(ws, request))
        rules = {
            line.split(" ::= ")[0]: line
            for line in constraint.grammar.splitlines()
            if line.startswith("call-")
        }
        for name, shape in constraint.format.shapes.items():
            rule = next(r for r in rules.values() if f'\\"call\\": \\"{name}\\"' in r)
            keys = {k for k in system.registry.get(name).model.model_fields if k != "call"}
            written = {k for k in keys if f'\\"{k}\\": ' in rule}
            assert written == {f.key for f in shape.fields}, (request, name)
