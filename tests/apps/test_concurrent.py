"""`llmos run a.toml b.toml`: every app approved before any runs, then all at once (each
waits at a barrier only the other can open), one model for all through the scheduler, output
prefixed with the app's name, the exit status of the first app that failed."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from llmos.apps.concurrent import run_apps
from llmos.apps.manifest import parse_manifest
from llmos.cli import main
from llmos.errors import EXIT_STATUS, ErrorCode
from llmos.kernel.backend import Message
from llmos.system import System
from llmos.testing import GatedModel

MEET = """\
import pathlib, sys, time
me, other = sys.argv[1:]
pathlib.Path(me).touch()
deadline = time.monotonic() + 20
while not pathlib.Path(other).exists():
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)
print("met", other)
"""
"""A barrier between two tool processes: each leaves its mark and waits for the other's, so
both finish only if both run at the same time."""


def app(tmp_path: Path, name: str, other: str, last: dict[str, Any]) -> Path:
    """A scripted app: meet the other app at the barrier, then its `last` step."""
    command = [sys.executable, "-c", MEET, f".{name}.here", f".{other}.here"]
    text = f"""\
name = "{name}"
capabilities = ["fs.write", "fs.read"]

[tools.meet_{name}]
description = "Wait for the other app."
command = {json.dumps(command)}
timeout = 30

[[steps]]
call = "tool.run"
name = "meet_{name}"

[[steps]]
{chr(10).join(f"{k} = {json.dumps(v)}" for k, v in last.items())}
"""
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def write_step(name: str) -> dict[str, Any]:
    return {"call": "fs.write", "path": f"{name}.txt", "content": f"{name} was here"}


def read_missing() -> dict[str, Any]:
    return {"call": "fs.read", "path": "missing.txt"}


def llmos_run(workspace: Path, *args: str | Path) -> int:
    return main(["-w", str(workspace), "run", *map(str, args)])


def test_two_apps_run_at_once_with_prefixed_output(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = app(tmp_path, "alpha", "beta", write_step("alpha"))
    b = app(tmp_path, "beta", "alpha", write_step("beta"))
    assert llmos_run(workspace, a, b, "--yes") == 0
    out = capsys.readouterr().out
    assert "alpha: [1] tool.run:" in out and "met .beta.here" in out
    assert "beta: [1] tool.run:" in out and "met .alpha.here" in out
    assert all(line.startswith(("alpha: ", "beta: ")) for line in out.splitlines())
    assert (workspace / "alpha.txt").read_text() == "alpha was here"
    assert (workspace / "beta.txt").read_text() == "beta was here"


def test_exit_status_is_the_first_failed_apps(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "ok.txt").write_text("fine")
    a = app(tmp_path, "alpha", "beta", write_step("alpha"))
    b = app(tmp_path, "beta", "alpha", read_missing())
    assert llmos_run(workspace, a, b, "--yes") == EXIT_STATUS[ErrorCode.E_NOENT]
    err = capsys.readouterr().err
    assert "beta: E_NOENT: step 2:" in err and "alpha:" not in err
    assert (workspace / "alpha.txt").exists(), "the other app ran to its end"

    (workspace / ".alpha.here").unlink()
    (workspace / ".beta.here").unlink()
    a = app(tmp_path, "alpha", "beta", {"call": "fs.write", "path": "../out.txt", "content": "x"})
    assert llmos_run(workspace, a, b) == EXIT_STATUS[ErrorCode.E_PERM], "argument order wins"
    err = capsys.readouterr().err
    assert "alpha: E_PERM" in err and "beta: E_NOENT" in err


@pytest.mark.slow
def test_every_app_is_approved_before_any_runs(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = app(tmp_path, "alpha", "beta", write_step("alpha"))
    b = app(tmp_path, "beta", "alpha", write_step("beta"))
    assert llmos_run(workspace, a, "--yes") != 0, "alone, alpha waits for beta in vain"
    assert (workspace / ".alpha.here").exists()
    (workspace / ".alpha.here").unlink()
    capsys.readouterr()

    status = llmos_run(workspace, a, b)
    assert status == EXIT_STATUS[ErrorCode.E_PERM], "beta was never approved, no one to ask"
    err = capsys.readouterr().err
    assert "beta: E_PERM: app beta needs approval for:" in err
    assert "alpha: not run" in err
    assert not (workspace / ".alpha.here").exists(), "alpha (approved) did not start either"


def test_apps_declaring_the_same_tool_name_are_refused(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = app(tmp_path, "alpha", "beta", write_step("alpha"))
    b = tmp_path / "beta.toml"
    b.write_text(a.read_text().replace('name = "alpha"', 'name = "beta"'))
    assert llmos_run(workspace, a, b, "--yes") == EXIT_STATUS[ErrorCode.E_EXISTS]
    assert "tool 'meet_alpha' is also declared by app alpha" in capsys.readouterr().err
    assert not (workspace / ".alpha.here").exists()


def meet_then_reply(who: str) -> Any:
    """A script: the first completion of the request calls the `meet` tool, the next replies."""

    def script(messages: list[Message]) -> dict[str, Any]:
        if "RESULT" in messages[-1]["content"]:
            return {"call": "reply", "text": f"{who} met"}
        return {"call": "tool.run", "name": "meet", "args": {}}

    return script


def test_request_steps_share_one_model_through_the_scheduler(
    system: System, tmp_path: Path, workspace: Path
) -> None:
    barrier = threading.Barrier(2, timeout=20)

    def meet() -> str:
        """Wait for the other app."""
        barrier.wait()
        return "met"

    system.tools.function(meet)
    model = GatedModel({"alpha:": meet_then_reply("alpha"), "beta:": meet_then_reply("beta")})
    opened: list[GatedModel] = []

    def open_model() -> GatedModel:
        opened.append(model)
        return model

    apps = []
    for name in ("alpha", "beta"):
        text = f'name = "{name}"\ncapabilities = ["tool.run on meet"]\n'
        text += f'[[steps]]\nrequest = "{name}: meet the other app"\n'
        apps.append((parse_manifest(text), tmp_path / f"{name}.toml"))
    lines: list[tuple[str, str]] = []
    runs = run_apps(
        system,
        apps,
        workspace,
        {},
        approve=lambda manifest, needs: True,
        backend=open_model,  # type: ignore[arg-type, return-value]
        show=lambda name, line: lines.append((name, line)),
    )
    outcomes = [(r.ok, r.replies) for r in runs]
    assert outcomes == [(True, ["alpha met"]), (True, ["beta met"])], (runs, lines)
    assert [r.value["output"] for run in runs for r in run.results if r.call == "tool.run"] == [
        "met",
        "met",
    ], "both tools passed the barrier: the apps ran at the same time"
    assert len(opened) == 1, "one model for both apps"
    assert sorted(model.served) == ["alpha:", "alpha:", "beta:", "beta:"]
    assert not model.overlapped, "the scheduler ran one completion at a time"
    assert ("alpha", "[1] reply: alpha met") in lines and ("beta", "[1] reply: beta met") in lines
