"""Background requests in the shell (`request &`): a job runs as its own process through the
scheduler the foreground shares, reports when it ends, shows in :ps, can be killed, goes on
through a Ctrl-C in the foreground, fails un-granted calls with E_PERM without asking, and a
piped run waits for it. Jobs are held mid-turn by Events, never by sleeping."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.security.capabilities import GrantAnswer, GrantRequest
from llmos.shell.jobs import BackgroundJob
from llmos.shell.model import LazyKernel
from llmos.shell.repl import Shell, run_piped
from llmos.system import System
from llmos.testing import GatedModel

WAIT = 60.0
"""Seconds any wait may take before the test fails: generous, as a loaded 2-core machine can
stall a thread for seconds, and a passing run never waits this long."""


def reply(text: str) -> dict[str, str]:
    return {"call": "reply", "text": text}


class Notices:
    """What the shell announces when jobs end (from the jobs' threads)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, bool]] = []

    def __call__(self, text: str, ok: bool) -> None:
        self.lines.append((text, ok))


@pytest.fixture
def make_shell(system: System, workspace: Path) -> Iterator[Any]:
    """Makes a shell on a fake model; afterwards releases the model's gates, leaves the shell
    and stops its scheduler."""
    made: list[tuple[Shell, GatedModel]] = []

    def make(model: GatedModel, **kwargs: Any) -> tuple[Shell, Notices]:
        notices = Notices()
        kwargs.setdefault("grant", None)
        shell = Shell(
            system, workspace, kernel=LazyKernel(system, lambda: model), notify=notices, **kwargs
        )
        made.append((shell, model))
        return shell, notices

    yield make
    for shell, model in made:
        model.release()
        shell.leave()
        if shell.kernel is not None:
            shell.kernel.close()


def hold_tool(system: System, workspace: Path) -> tuple[threading.Event, threading.Event]:
    """A `hold` tool that waits until released, and a remembered ("always") grant of it for
    the workspace, which background jobs hold. Returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> str:
        """Wait until the test says so."""
        entered.set()
        assert release.wait(WAIT), "the test never released the tool"
        return "released"

    system.tools.function(hold, timeout=2 * WAIT)  # a loaded machine must not time it out
    system.grants.save(workspace.resolve(), system.authority.mint("tool.run", scope="hold"))
    return entered, release


def job(shell: Shell, number: int) -> BackgroundJob:
    found = shell.jobs.get(number)
    assert found is not None
    return found


def wait_until(condition: Any, what: str) -> None:
    """Poll a state no Event marks (a request sitting in the scheduler's queue)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.005)


def test_a_background_request_runs_as_its_own_process_and_reports(
    make_shell: Any, system: System, workspace: Path
) -> None:
    (workspace / "notes.txt").write_text("The meeting is at noon.\n")
    model = GatedModel(
        {
            "notes.txt": [{"call": "fs.read", "path": "notes.txt"}, reply("It says noon.")],
            "hello": [reply("Hi.")],
        }
    )
    shell, notices = make_shell(model)
    ok, text = shell.handle("what does notes.txt say? &")
    assert (ok, text) == (True, "[1] started: what does notes.txt say?")
    assert job(shell, 1).ended.wait(WAIT)
    assert notices.lines == [("[1] done: It says noon.", True)]
    assert shell.handle("hello") == (True, "Hi."), "the foreground shares the model"

    background = job(shell, 1)
    assert background.process.name == "job1" and background.process.pid != shell.process.pid
    assert background.process.workspace.root == shell.process.workspace.root
    assert [t.request for t in shell.conversation.turns] == ["hello"], "its own conversation"
    ok, text = shell.handle(":jobs 1")
    assert ok and text.splitlines()[0].startswith("[1] what does notes.txt say?")
    assert "→ fs.read path=notes.txt" in text and "The meeting is at noon." in text
    assert text.endswith("[1] done: It says noon.")
    assert shell.handle(":wait 1") == (ok, text)
    ok, text = shell.handle(":jobs")
    assert ok and text.startswith("[1] done ") and text.endswith(" what does notes.txt say?")
    audit = [json.loads(line) for line in system.audit.path.read_text().splitlines()]
    assert [(a["proc"], a["call"]) for a in audit] == [
        ("job1", "fs.read"),
        ("job1", "reply"),
        ("shell", "reply"),
    ]
    assert not model.overlapped


def test_ps_shows_each_jobs_state_time_and_completions(
    make_shell: Any, system: System, workspace: Path
) -> None:
    entered, release = hold_tool(system, workspace)
    model = GatedModel(
        {
            "job one": [{"call": "tool.run", "name": "hold", "args": {}}, reply("held")],
            "job two": [reply("thought")],
            "job three": [reply("queued")],
        }
    )
    model.gates["job two"] = threading.Event()
    shell, notices = make_shell(model)
    shell.handle("job one: hold the tool &")
    assert entered.wait(WAIT)
    shell.handle("job two: think &")
    assert model.arrived["job two"].wait(WAIT)
    shell.handle("job three: queue &")
    scheduler = shell.kernel.scheduler
    wait_until(lambda: scheduler.pending() == 1, "job three queued for the model")

    ok, text = shell.handle(":ps")
    assert ok
    lines = text.splitlines()
    assert lines[0] == f"workspace {workspace.resolve()}"
    assert lines[1].split() == ["JOB", "PID", "NAME", "STATE", "TIME", "MODEL", "REQUEST"]
    assert lines[2].split()[:4] == ["-", str(shell.process.pid), "shell", "ready"]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert "running a syscall" in rows["[1]"] and rows["[1]"].endswith("job one: hold the tool")
    assert "thinking" in rows["[2]"] and "waiting for model" in rows["[3]"]
    one = rows["[1]"].split()
    assert one[1] == str(job(shell, 1).process.pid) and one[2] == "job1"
    assert one[6].endswith("s") and one[7] == "1", "elapsed time, then one completion so far"

    model.gates["job two"].set()
    assert job(shell, 2).ended.wait(WAIT) and job(shell, 3).ended.wait(WAIT)
    release.set()
    assert job(shell, 1).ended.wait(WAIT)
    rows = {line.split()[0]: line for line in shell.handle(":ps")[1].splitlines()[3:]}
    assert all(" done " in row for row in rows.values())
    assert rows["[1]"].split()[5] == "2", "two completions in all"
    assert sorted(notices.lines) == [
        ("[1] done: held", True),
        ("[2] done: thought", True),
        ("[3] done: queued", True),
    ]
    assert not model.overlapped, "one completion at a time"


def test_kill_cancels_a_job(make_shell: Any, system: System, workspace: Path) -> None:
    model = GatedModel({"tidy": [{"call": "fs.list", "path": "."}, reply("listed")]})
    model.gates["tidy"] = threading.Event()
    shell, notices = make_shell(model)
    shell.handle("tidy up &")
    assert model.arrived["tidy"].wait(WAIT)
    assert shell.handle(":kill 1") == (True, "[1] cancelling: tidy up")
    model.gates["tidy"].set()
    assert job(shell, 1).ended.wait(WAIT)
    assert notices.lines == [("[1] failed: cancelled (:kill 1)", False)]
    assert model.served == ["tidy"], "the model was asked nothing more"
    assert "fs.list" not in system.audit.path.read_text(), "the decided call never ran"
    assert shell.handle(":kill 1") == (False, "[1] has already ended")
    assert shell.handle(":kill 9")[1].startswith("E_NOENT")
    assert "failed" in shell.handle(":ps")[1].splitlines()[3]


def test_kill_stops_the_tool_a_job_is_running(
    make_shell: Any, system: System, workspace: Path
) -> None:
    entered, release = hold_tool(system, workspace)
    model = GatedModel({"wait": [{"call": "tool.run", "name": "hold", "args": {}}, reply("held")]})
    shell, notices = make_shell(model)
    shell.handle("wait: run the hold tool &")  # a request that asks for the tool (policy)
    assert entered.wait(WAIT)
    began = time.monotonic()
    shell.handle(":kill 1")
    assert job(shell, 1).ended.wait(WAIT) and time.monotonic() - began < WAIT / 2
    release.set()
    results = [e.result for e in job(shell, 1).events if e.result is not None]
    assert [r.code for r in results] == ["E_INTR"], "the job did not wait for its tool to end"
    assert model.served == ["wait"] and notices.lines == [
        ("[1] failed: cancelled (:kill 1)", False)
    ]


def test_ctrl_c_in_the_foreground_leaves_jobs_running(
    make_shell: Any, system: System, workspace: Path
) -> None:
    entered, release = hold_tool(system, workspace)
    model = GatedModel(
        {
            "background": [{"call": "tool.run", "name": "hold", "args": {}}, reply("held on")],
            "foreground": [reply("never seen"), reply("seen")],
        }
    )
    model.gates["foreground"] = threading.Event()
    shell, notices = make_shell(model)
    shell.handle("background: hold the tool &")
    assert entered.wait(WAIT)

    main = threading.main_thread().ident
    assert main == threading.get_ident(), "Ctrl-C is delivered to the main thread"

    pressed = threading.Event()

    def press_ctrl_c() -> None:
        if model.arrived["foreground"].wait(WAIT):
            pressed.set()
            signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    stopped = False
    try:
        shell.handle("foreground: a long request")
    except KeyboardInterrupt:
        stopped = True
    presser.join()
    assert pressed.is_set(), f"the foreground request never reached the model in {WAIT:.0f} s"
    assert stopped, "Ctrl-C did not stop the foreground request"
    shell.cancelled()  # what the terminal shell does after ^C
    model.gates["foreground"].set()
    cancelled = shell.conversation.turns[-1]
    assert cancelled.request == "foreground: a long request"
    assert cancelled.done and "cancelled" in cancelled.reply, "the turn says it was stopped"

    background = job(shell, 1)
    assert not background.done and not background.killed, background.outcome()
    release.set()
    assert job(shell, 1).ended.wait(WAIT)
    assert notices.lines == [("[1] done: held on", True)]
    assert shell.handle("foreground: again") == (True, "seen"), "the shell is still usable"


def test_ctrl_c_while_waiting_stops_the_wait_not_the_job(
    make_shell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = GatedModel({"slow": [reply("finally")]})
    model.gates["slow"] = threading.Event()
    shell, _ = make_shell(model)
    shell.handle("slow thing &")
    background = job(shell, 1)

    def interrupted(timeout: float | None = None) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(background.ended, "wait", interrupted)
    ok, text = shell.handle(":wait 1")
    assert ok and text == "stopped waiting; [1] is still running (:kill 1 stops it)"
    monkeypatch.undo()
    model.gates["slow"].set()
    assert shell.handle(":wait 1")[1].endswith("[1] done: finally")


def test_a_background_job_is_never_asked_for_a_grant(
    make_shell: Any, system: System, workspace: Path
) -> None:
    (workspace / "old.txt").write_text("stale")
    asked: list[GrantRequest] = []

    def grant(request: GrantRequest) -> GrantAnswer:
        asked.append(request)
        return GrantAnswer.ONCE

    model = GatedModel(
        {
            "clean": [
                {"call": "fs.delete", "path": "old.txt"},
                reply("I may not delete old.txt."),
            ]
        }
    )
    shell, notices = make_shell(model, grant=grant)
    shell.handle("clean up old.txt &")
    assert job(shell, 1).ended.wait(WAIT)
    assert asked == [], "no prompt for a background job"
    assert (workspace / "old.txt").exists()
    results = [e.result for e in job(shell, 1).events if e.result is not None]
    assert [(r.call, r.code) for r in results] == [("fs.delete", "E_PERM"), ("reply", None)]
    assert notices.lines == [("[1] done: I may not delete old.txt.", True)]
    assert "E_PERM" in shell.handle(":jobs 1")[1]
    assert shell.handle("fs.delete path=old.txt")[0] and len(asked) == 1, "the foreground asks"


def test_a_background_job_holds_what_this_session_was_granted_and_denied(
    make_shell: Any, system: System, workspace: Path
) -> None:
    (workspace / "old.txt").write_text("stale")
    (workspace / "secret.txt").write_text("hunter2")
    model = GatedModel(
        {
            "clean": [{"call": "fs.delete", "path": "old.txt"}, reply("Deleted old.txt.")],
            "peek": [{"call": "fs.read", "path": "secret.txt"}, reply("Cannot.")],
        }
    )
    shell, _ = make_shell(model)
    assert shell.handle(":caps grant fs.delete on old.txt")[0]
    shell.process.caps.deny("fs.read", "secret.txt")  # what a "deny" answer records
    shell.handle("clean up old.txt &")
    shell.handle("peek at secret.txt &")
    assert job(shell, 1).ended.wait(WAIT) and job(shell, 2).ended.wait(WAIT)
    assert not (workspace / "old.txt").exists(), "the session's grant reached the job"
    read = next(e.result for e in job(shell, 2).events if e.result is not None)
    assert read.code == "E_PERM", "and so did the denial, though fs.read is a default"
    fresh = system.spawn("other", workspace)
    assert fresh.caps.find("fs.delete", ["old.txt"]) is None, "no other process gets them"


@pytest.mark.slow
def test_leaving_cancels_running_jobs(make_shell: Any) -> None:
    model = GatedModel({"forever": [reply("too late")]})
    model.gates["forever"] = threading.Event()
    shell, notices = make_shell(model)
    shell.handle("forever &")
    assert model.arrived["forever"].wait(WAIT)
    assert shell.leave() == "cancelled 1 background job(s) still running: [1] forever"
    model.gates["forever"].set()
    assert job(shell, 1).ended.wait(WAIT)
    assert job(shell, 1).outcome() == (False, "cancelled (:kill 1)")
    assert notices.lines == [], "nothing is announced once the shell has left"
    assert shell.leave() == ""


def test_what_cannot_run_in_the_background(system: System, workspace: Path) -> None:
    shell = Shell(system, workspace, grant=None)
    ok, text = shell.handle("fs.list &")
    assert not ok and text.startswith("E_INVAL: only requests to the kernel run in the background")
    ok, text = shell.handle("tidy up &")
    assert not ok and "direct-call mode" in text
    assert shell.handle(":jobs") == (
        True,
        "(no background jobs; end a request with & to start one)",
    )
    assert shell.handle(":wait 3")[1].startswith("E_NOENT")
    assert shell.handle(":kill")[1] == "usage: :kill N"


class Stdin:
    """Piped input that marks when it has been read to its end."""

    def __init__(self, text: str) -> None:
        self.lines = io.StringIO(text).readlines()
        self.eof = threading.Event()

    def __iter__(self) -> Iterator[str]:
        yield from self.lines
        self.eof.set()


def test_piped_input_waits_for_background_jobs(
    system: System,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hold_tool(system, workspace)
    stdin = Stdin("job one: hold &\nbroken job &\nfs.write path=a.txt content=x\n")

    def hold_until_eof() -> str:
        """Wait for the end of the input."""
        assert stdin.eof.wait(WAIT)
        return "input over"

    system.tools.remove("hold")
    system.tools.function(hold_until_eof, name="hold")
    model = GatedModel(
        {
            "job one": [{"call": "tool.run", "name": "hold", "args": {}}, reply("held")],
            "broken": ["not json", "still not json"],
        }
    )
    monkeypatch.setattr("sys.stdin", stdin)
    kernel = LazyKernel(system, lambda: model)
    try:
        status = run_piped(system, workspace, kernel)
    finally:
        kernel.close()
    out, err = capsys.readouterr()
    assert status == 1, "a failed job fails the run"
    assert out.splitlines()[:2] == ["[1] started: job one: hold", "[2] started: broken job"]
    assert "[1] done: held" in out, "the run waited for the job held until the input ended"
    assert "[2] failed: E_INVAL: the model gave no valid syscall" in err
    assert (workspace / "a.txt").read_text() == "x"
