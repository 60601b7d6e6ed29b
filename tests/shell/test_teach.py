"""Teaching the kernel from the shell: :teach, :done, :cancel, :good and :bad."""

from __future__ import annotations

from pathlib import Path

from llmos.shell.model import LazyKernel
from llmos.shell.repl import Shell
from llmos.system import System
from llmos.testing import ScriptedBackend


def shell_with(system: System, workspace: Path, outputs: list[dict[str, object]]) -> Shell:
    backend = ScriptedBackend(list(outputs))
    return Shell(system, workspace, grant=None, kernel=LazyKernel(system, lambda: backend))


def test_teach_runs_the_shown_calls_and_keeps_them_for_the_request(
    system: System, workspace: Path
) -> None:
    shell = shell_with(
        system,
        workspace,
        [{"call": "fs.mkdir", "path": "drafts"}],  # then the backend fails: no outputs left
    )
    request = "start a new empty file called x.txt"
    assert not shell.handle(request)[0]
    ok, text = shell.handle(":teach")
    assert ok and request in text
    ok, text = shell.handle("what next?")
    assert not ok and "teaching" in text, "no request goes to the kernel while teaching"
    assert shell.handle("!fs.write path=x.txt content=")[0]
    assert not shell.handle("!fs.read path=nope")[0], "a failing call is not part of the lesson"
    ok, text = shell.handle(":done")
    assert ok and "fs.write" in text
    assert (workspace / "x.txt").read_text() == "", "the shown call ran through dispatch"
    lesson = system.lessons.all()[-1]
    assert (lesson.request, lesson.kind) == (request, "taught")
    assert lesson.calls == [{"call": "fs.write", "path": "x.txt", "content": ""}]
    taught = [e for e in system.examples.examples() if e.source == "taught"]
    assert [(e.request, e.calls, e.scope) for e in taught] == [(request, lesson.calls, None)]


def test_cancel_keeps_nothing_and_good_keeps_the_turn(system: System, workspace: Path) -> None:
    (workspace / "a.txt").write_text("hello\n")
    shell = shell_with(
        system,
        workspace,
        [
            {"call": "fs.read", "path": "a.txt"},
            {"call": "reply", "text": "It says hello."},
        ],
    )
    assert shell.handle(":teach copy a.txt to b.txt")[0]
    assert shell.handle(":cancel") == (True, "nothing taught")
    assert system.lessons.all() == []
    assert not shell.handle(":good")[0], "no request has ended yet"
    shell.handle("what does a.txt say?")
    assert shell.handle(":good")[0]
    lesson = system.lessons.all()[-1]
    assert lesson.kind == "good" and lesson.calls == [{"call": "fs.read", "path": "a.txt"}]
    assert lesson.workspace == str(workspace.resolve()), "it names this workspace's file"


def test_bad_is_never_shown_again(system: System, workspace: Path) -> None:
    (workspace / "temp.csv").write_text("a,b\n")
    shell = shell_with(
        system,
        workspace,
        [{"call": "fs.mkdir", "path": "bin"}, {"call": "reply", "text": "It is in the bin."}],
    )
    shell.handle("chuck the temp file in the bin")
    assert shell.handle(":good")[0]
    assert any(e.source == "good" for e in system.examples.examples())
    ok, text = shell.handle(":bad")
    assert ok and "fs.mkdir" in text
    assert not any(e.source == "good" for e in system.examples.examples())
    assert [x.kind for x in system.lessons.all()] == ["bad"]
    with System(system.settings, plugins=False) as again:
        assert not any(
            e.calls == [{"call": "fs.mkdir", "path": "bin"}] for e in again.examples.examples()
        )


def test_a_turn_that_went_right_is_learned_and_an_undone_or_corrected_one_never(
    system: System, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("hello\n")
    system.examples.embedder = None  # no meaning to compare: words and paths alone
    shell = shell_with(
        system,
        workspace,
        [
            {"call": "fs.write", "path": "b.txt", "content": "hi"},
            {"call": "reply", "text": "Wrote b.txt."},
            {"call": "fs.list"},
            {"call": "reply", "text": "There is a.txt."},
            {"call": "fs.write", "path": "c.txt", "content": "x"},
            {"call": "reply", "text": "Wrote c.txt."},
            {"call": "fs.write", "path": "d.txt", "content": "x"},
            {"call": "reply", "text": "Wrote d.txt."},
            {"call": "reply", "text": "Bye."},
        ],
    )
    shell.handle("write hi to b.txt")
    assert shell.handle(":undo")[0] and not (workspace / "b.txt").exists()
    shell.handle("list the files")  # the undone turn is settled here: never learned
    shell.handle("put x in c.txt")  # "list the files" is learned: this moves on
    shell.handle("no, I meant d.txt")  # a correction: "put x in c.txt" is not learned
    shell.handle("bye")
    learned = [(x.request, x.calls) for x in system.lessons.all() if x.kind == "learned"]
    assert learned == [("list the files", [{"call": "fs.list"}])], (
        "neither the undone turn, nor the corrected one, nor the correction itself"
    )
    assert [e.request for e in system.examples.examples() if e.source == "learned"] == [
        "list the files"
    ]


def test_nothing_is_learned_when_learning_from_use_is_off(system: System, workspace: Path) -> None:
    system.settings.learn_from_use = False
    shell = shell_with(
        system,
        workspace,
        [
            {"call": "fs.list"},
            {"call": "reply", "text": "It is empty."},
            {"call": "reply", "text": "Bye."},
        ],
    )
    shell.handle("list the files")
    shell.handle("bye")
    assert system.lessons.all() == []
