"""`llmos call`, `llmos syscalls` and `llmos bench dispatch` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.cli import main
from llmos.errors import EXIT_STATUS, ErrorCode


def run_cli(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real `llmos` entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "llmos.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )


def test_call_reads_a_file_in_the_current_folder(workspace: Path) -> None:
    (workspace / "notes.txt").write_text("buy milk\n")
    proc = run_cli("call", "fs.read", "path=notes.txt", "--output-json", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["value"]["text"] == "buy milk\n"


def test_call_failure_sets_exit_status_and_prints_the_code(workspace: Path) -> None:
    proc = run_cli("call", "fs.read", "path=missing.txt", cwd=workspace)
    assert proc.returncode == EXIT_STATUS[ErrorCode.E_NOENT]
    assert "E_NOENT" in proc.stderr
    proc = run_cli("call", "fs.read", "path=/etc/passwd", cwd=workspace)
    assert proc.returncode == EXIT_STATUS[ErrorCode.E_PERM]
    assert "E_PERM" in proc.stderr


def test_call_json_form_and_typed_coercion(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    (workspace / "long.txt").write_text("abcdefghij")
    assert main(["call", "fs.read", "path=long.txt", "limit=4"]) == 0
    assert capsys.readouterr().out == "abcd [truncated: more from offset 4]\n"
    payload = json.dumps({"call": "fs.write", "path": "j.txt", "content": "x=1 y"})
    assert main(["call", "--json", payload]) == 0
    assert (workspace / "j.txt").read_text() == "x=1 y"
    assert (
        main(["call", "fs.read", "path=long.txt", "limit=many"]) == EXIT_STATUS[ErrorCode.E_INVAL]
    )
    assert "limit" in capsys.readouterr().err
    assert main(["call", "fs.read", "pathnotes"]) == EXIT_STATUS[ErrorCode.E_INVAL]


def test_call_writes_are_audited_and_the_log_verifies(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, llmos_home: Path
) -> None:
    monkeypatch.chdir(workspace)
    assert main(["call", "fs.write", "path=a.txt", "content=hello"]) == 0
    assert main(["call", "fs.delete", "path=a.txt"]) == EXIT_STATUS[ErrorCode.E_PERM]
    assert (workspace / "a.txt").exists(), "deleting needs a grant; with no terminal it fails"
    allowed = ["call", "--allow", "fs.delete", "fs.delete", "path=nope.txt"]
    assert main(allowed) == EXIT_STATUS[ErrorCode.E_NOENT]
    lines = (llmos_home / "audit.log").read_text().splitlines()
    assert [json.loads(line)["call"] for line in lines] == ["fs.write", "fs.delete", "fs.delete"]
    assert [json.loads(line)["code"] for line in lines] == [None, "E_PERM", "E_NOENT"]
    assert main(["audit", "verify"]) == 0


def test_syscalls_lists_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["syscalls"]) == 0
    out = capsys.readouterr().out
    assert "fs.read" in out and "image.thumbnail" in out


def test_bench_dispatch_prints_figures(workspace: Path) -> None:
    proc = run_cli("bench", "dispatch", "-n", "300", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert "p50" in proc.stdout and "p99" in proc.stdout


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_mem_reindex_rebuilds_the_index_from_the_store(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", "mem.store", "text=The user's boat is called Wave."]) == 0
    assert main(["mem", "reindex"]) == 0
    assert "1 records" in capsys.readouterr().out
    assert main(["call", "--output-json", "mem.search", "query=boat name"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert "Wave" in found["value"]["hits"][0]["text"]


def test_learn_imports_lists_forgets_and_names_a_bad_line(workspace: Path) -> None:
    good = {"request": "ditch temp.log", "calls": [{"call": "fs.delete", "path": "temp.log"}]}
    bad = {"request": "tack it on", "calls": [{"call": "fs.append", "path": "a.txt"}]}
    source = workspace / "teach.jsonl"
    source.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    proc = run_cli("learn", "import", str(source), cwd=workspace)
    assert proc.returncode != 0
    assert "teach.jsonl:2" in proc.stderr and "text" in proc.stderr
    source.write_text(json.dumps(good) + "\n")
    assert "taught 1 examples" in run_cli("learn", "import", str(source), cwd=workspace).stdout
    listed = run_cli("learn", "list", cwd=workspace).stdout
    assert "ditch temp.log" in listed and '"fs.delete"' in listed and "learning is on" in listed
    assert run_cli("learn", "off", cwd=workspace).returncode == 0
    assert "learning is off" in run_cli("learn", "list", cwd=workspace).stdout
    assert "forgot 1 lessons" in run_cli("learn", "forget", "--all", cwd=workspace).stdout
    assert run_cli("learn", "forget", cwd=workspace).returncode == 2
