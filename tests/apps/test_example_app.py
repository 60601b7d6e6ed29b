"""The example app manifest shipped in examples/apps runs as its comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.cli import main
from llmos.errors import EXIT_STATUS, ErrorCode

EXAMPLE = Path(__file__).parents[2] / "examples" / "apps" / "backup-note.toml"


def test_the_example_app_backs_up_a_note(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "todo.txt").write_text("buy milk and eggs\n")
    args = ["-w", str(workspace), "run", str(EXAMPLE), "--input", "note=todo.txt"]
    assert main(args) != 0, "not approved yet, and no one to ask"
    assert not (workspace / "backup").exists()
    assert main([*args, "--yes"]) == 0
    assert (workspace / "backup" / "todo.txt").read_text() == "buy milk and eggs\n"
    assert '"output": "4 ./todo.txt\\n"' in capsys.readouterr().out
    (workspace / "backup" / "todo.txt").unlink()
    assert main(args) == 0, "the approval is remembered"
    assert main(args) == EXIT_STATUS[ErrorCode.E_EXISTS], "a second copy would overwrite it"
