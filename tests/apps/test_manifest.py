"""App manifests: validation errors name the bad key; `llmos run` approves once, remembers,
denies anything beyond the approved capabilities, and says so in its exit status."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmos.apps.manifest import CapabilityNeed, parse_manifest, run_app
from llmos.cli import main
from llmos.errors import EXIT_STATUS, ErrorCode, LlmosError
from llmos.system import System
from llmos.testing import ScriptedBackend

GOOD = """\
name = "notes"
description = "Copies a note and greps it."
prompt = "You keep the user's notes tidy."
capabilities = ["fs.read", "fs.write on out"]

[inputs]
note = "todo.txt"

[tools.echo]
description = "Print text."
command = ["echo", "{text}"]
timeout = 5
args = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }

[[steps]]
call = "fs.read"
path = "{note}"

[[steps]]
call = "fs.write"
path = "out/{note}"
content = "copied {note}"

[[steps]]
call = "tool.run"
name = "echo"
args = { text = "{say}" }
"""


def write(tmp_path: Path, text: str, name: str = "app.toml") -> Path:
    """A manifest file."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def llmos_run(path: Path, workspace: Path, *extra: str) -> int:
    """`llmos -w WORKSPACE run PATH ...` in-process."""
    return main(["-w", str(workspace), "run", str(path), *extra])


def test_valid_manifest_parses_and_lists_its_needs() -> None:
    manifest = parse_manifest(GOOD)
    assert manifest.name == "notes" and manifest.tools["echo"].timeout == 5
    assert [s.raw()["call"] for s in manifest.steps] == ["fs.read", "fs.write", "tool.run"]
    assert manifest.needs() == sorted(
        [
            CapabilityNeed("fs.read"),
            CapabilityNeed("fs.write", "out"),
            CapabilityNeed("tool.run", "echo"),
        ]
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("timeout = 5", 'timeout = "slow"'),
            "app.toml: [tools.echo].timeout: Input should be a valid number",
        ),
        (
            ("timeout = 5", "tmeout = 5"),
            "app.toml: [tools.echo].tmeout: Extra inputs are not permitted",
        ),
        (
            ('command = ["echo", "{text}"]', 'command = ["echo", "{txt}"]'),
            "app.toml: [tools.echo]: Value error, command uses {txt}",
        ),
        (
            ('call = "fs.read"', 'cal = "fs.read"'),
            "app.toml: [[steps]] #1: Value error, a step needs exactly one of",
        ),
        (('"fs.read", ', '"fs read", '), "app.toml: capabilities: Value error, 'fs read'"),
        (('name = "notes"', 'name = "no tes"'), "app.toml: name: String should match pattern"),
        (('name = "notes"', "name = notes"), "app.toml: not valid TOML: Invalid value (at line 1"),
    ],
)
def test_invalid_manifest_error_names_the_key(change: tuple[str, str], expected: str) -> None:
    bad = GOOD.replace(*change)
    assert bad != GOOD
    with pytest.raises(LlmosError) as info:
        parse_manifest(bad)
    assert info.value.code == ErrorCode.E_INVAL
    assert expected in info.value.message, info.value.message


def test_a_manifest_with_nothing_to_do_is_refused() -> None:
    with pytest.raises(LlmosError, match="needs steps, or a prompt"):
        parse_manifest('name = "idle"\n')


def test_llmos_run_asks_once_then_remembers(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "todo.txt").write_text("milk")
    path = write(tmp_path, GOOD)
    status = llmos_run(path, workspace, "--input", "say=hi")
    assert status == EXIT_STATUS[ErrorCode.E_PERM], "no terminal and no --yes: nothing approved"
    err = capsys.readouterr().err
    assert "needs approval for: fs.read, fs.write on out, tool.run on echo" in err
    assert not (workspace / "out").exists()

    assert llmos_run(path, workspace, "--input", "say=hi", "--yes") == 0
    assert (workspace / "out" / "todo.txt").read_text() == "copied todo.txt"
    assert '"output": "hi\\n"' in capsys.readouterr().out

    (workspace / "b.txt").write_text("eggs")
    assert llmos_run(path, workspace, "--input", "say=again", "--input", "note=b.txt") == 0
    assert (workspace / "out" / "b.txt").read_text() == "copied b.txt"

    wider = write(tmp_path, GOOD.replace('"fs.read", ', '"fs.read", "fs.delete", '))
    assert wider == path
    assert llmos_run(path, workspace, "--input", "say=x") == EXIT_STATUS[ErrorCode.E_PERM]
    assert "needs approval for: fs.delete" in capsys.readouterr().err


def test_llmos_run_denies_what_was_not_approved(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "todo.txt").write_text("milk")
    sneaky = GOOD + '\n[[steps]]\ncall = "fs.write"\npath = "todo.txt"\ncontent = "gone"\n'
    path = write(tmp_path, sneaky)
    status = llmos_run(path, workspace, "--input", "say=hi", "--yes")
    assert status == EXIT_STATUS[ErrorCode.E_PERM]
    assert "step 4: E_PERM: missing capability fs.write on todo.txt" in capsys.readouterr().err
    assert (workspace / "todo.txt").read_text() == "milk"
    assert (workspace / "out" / "todo.txt").exists(), "the approved steps before it ran"


def test_llmos_run_exit_status_tells_failures_apart(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    status = llmos_run(path, workspace, "--input", "say=hi", "--yes")
    assert status == EXIT_STATUS[ErrorCode.E_NOENT], "todo.txt does not exist"
    assert llmos_run(path, workspace, "--yes") == EXIT_STATUS[ErrorCode.E_INVAL]
    assert "[[steps]] #3 uses {say}, which no --input say=... gives" in capsys.readouterr().err
    assert llmos_run(tmp_path / "missing.toml", workspace) == EXIT_STATUS[ErrorCode.E_NOENT]
    assert llmos_run(path, workspace, "--input", "oops") == EXIT_STATUS[ErrorCode.E_INVAL]


def test_inputs_reach_tools_as_literal_words(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "todo.txt").write_text("milk")
    (workspace / "x").write_text("keep")
    path = write(tmp_path, GOOD)
    assert llmos_run(path, workspace, "--input", "say=; rm -rf x $(id)", "--yes") == 0
    assert '"output": "; rm -rf x $(id)\\n"' in capsys.readouterr().out
    assert (workspace / "x").read_text() == "keep"


def test_a_failing_tool_fails_the_run(tmp_path: Path, workspace: Path) -> None:
    text = """\
    name = "fails"
    [tools.no]
    description = "Always fails."
    command = ["false"]
    [[steps]]
    call = "tool.run"
    name = "no"
    """
    assert llmos_run(write(tmp_path, text), workspace, "--yes") == EXIT_STATUS[ErrorCode.E_IO]


REQUEST_APP = """\
name = "asker"
prompt = "You answer questions about files."
capabilities = ["fs.read"]

[[steps]]
request = "what is in {file}?"
"""


def test_request_steps_run_through_the_kernel(
    system: System, tmp_path: Path, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("42")
    manifest = parse_manifest(REQUEST_APP)
    backend = ScriptedBackend(
        [
            {"call": "fs.read", "path": "a.txt"},
            {"call": "fs.write", "path": "a.txt", "content": "pwned"},
            {"call": "reply", "text": "It says 42."},
        ]
    )
    shown: list[str] = []
    run = run_app(
        system,
        manifest,
        tmp_path / "app.toml",
        workspace,
        {"file": "a.txt"},
        approve=lambda m, needs: True,
        backend=lambda: backend,
        show=shown.append,
    )
    assert run.ok and run.replies == ["It says 42."]
    first = backend.prompts[0][-1]["content"]
    assert "WORKSPACE: a.txt\n\nYou answer questions about files." in first
    assert "what is in a.txt?" in first
    codes = [(r.call, r.code) for r in run.results]
    assert codes == [("fs.read", None), ("fs.write", "E_PERM"), ("reply", None)]
    assert (workspace / "a.txt").read_text() == "42"


def test_a_request_the_kernel_does_not_answer_fails(
    system: System, tmp_path: Path, workspace: Path
) -> None:
    manifest = parse_manifest(REQUEST_APP)
    run = run_app(
        system,
        manifest,
        tmp_path / "app.toml",
        workspace,
        {"file": "a.txt"},
        approve=lambda m, needs: True,
        backend=lambda: ScriptedBackend(["not json", "still not json"]),
        show=lambda line: None,
    )
    assert not run.ok and run.code == ErrorCode.E_INVAL
    assert "did not reply" in run.message


def test_an_unsandboxed_tool_is_shown_on_approval_and_asked_for_again(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "todo.txt").write_text("milk")
    path = write(tmp_path, GOOD)
    assert llmos_run(path, workspace, "--input", "say=hi", "--yes") == 0
    assert llmos_run(path, workspace, "--input", "say=hi") == 0, "approved and remembered"
    capsys.readouterr()
    unwalled = GOOD.replace("timeout = 5", "timeout = 5\nsandbox = false")
    manifest = parse_manifest(unwalled)
    need = next(n for n in manifest.needs() if n.call == "tool.run")
    assert need == CapabilityNeed("tool.run", "echo"), "the note is not part of the need"
    assert "runs unsandboxed, with your full rights" in need.describe()
    path.write_text(unwalled)
    status = llmos_run(path, workspace, "--input", "say=hi")
    assert status == EXIT_STATUS[ErrorCode.E_PERM], "the sandboxed tool's approval does not carry"
    assert "tool.run on echo (runs unsandboxed" in capsys.readouterr().err
    networked = parse_manifest(GOOD.replace("timeout = 5", "timeout = 5\nnetwork = true"))
    assert "may use the network" in networked.needs()[-1].describe()


EXAMPLE_APP = """
name = "tidy"
capabilities = ["fs.read", "fs.list"]

[[steps]]
request = "sweep the crumbs in {file}"

[[examples]]
request = "sweep the crumbs in notes.txt"
calls = [{call = "fs.read", path = "notes.txt"}]
"""


def test_an_app_is_shown_its_own_examples_and_never_another_apps(
    system: System, tmp_path: Path, workspace: Path
) -> None:
    (workspace / "a.txt").write_text("crumbs")
    system.examples.embedder = None  # rank by words: no model to load
    other = system.examples.registrar("app:other")
    other.add("sweep the crumbs in b.txt", {"call": "fs.list", "path": "."})
    plugin = system.examples.registrar("someplugin")
    plugin.add("sweep the crumbs in c.txt", {"call": "fs.stat", "path": "c.txt"})
    backend = ScriptedBackend(
        [{"call": "fs.read", "path": "a.txt"}, {"call": "reply", "text": "a.txt says crumbs."}]
    )
    run = run_app(
        system,
        parse_manifest(EXAMPLE_APP),
        tmp_path / "app.toml",
        workspace,
        {"file": "a.txt"},
        approve=lambda m, needs: True,
        backend=lambda: backend,
        show=lambda line: None,
    )
    assert run.ok
    prompt = backend.prompts[0][-1]["content"]
    assert "User: sweep the crumbs in notes.txt" in prompt, "its own example is shown"
    assert "b.txt" not in prompt and "c.txt" not in prompt, "another app's never"
    assert not any(e.source == "app:tidy" for e in system.examples.examples()), (
        "the app's examples leave with its run"
    )


def test_an_app_example_the_table_refuses_is_named(
    system: System, tmp_path: Path, workspace: Path
) -> None:
    bad = EXAMPLE_APP.replace('call = "fs.read", path', 'call = "fs.read", nope')
    with pytest.raises(LlmosError) as caught:
        run_app(
            system,
            parse_manifest(bad),
            tmp_path / "app.toml",
            workspace,
            {"file": "a.txt"},
            approve=lambda m, needs: True,
            show=lambda line: None,
        )
    assert caught.value.code == ErrorCode.E_INVAL and "[[examples]] #1" in caught.value.message
