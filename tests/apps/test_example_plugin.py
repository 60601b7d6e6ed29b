"""The example plugin in examples/, installed as a distribution with the entry point its own
pyproject.toml declares, works end to end: its syscall and its tool go through dispatch."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.apps.plugins import build_registry
from llmos.cli import main
from llmos.config import Settings
from llmos.syscalls.tool import ToolTable
from llmos.system import System

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llmos-example-plugin"


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example installed the way pip would lay it out: its package on the path and a
    dist-info whose entry points are the ones its pyproject.toml declares."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    group = project["entry-points"]["llmos.apps"]
    site = tmp_path / "site"
    info = site / f"llmos_example_plugin-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in group.items())
    (info / "entry_points.txt").write_text(f"[llmos.apps]\n{lines}")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield EXAMPLE
    sys.modules.pop("llmos_example_plugin", None)


def test_example_registers_a_syscall_and_a_tool(example_plugin: Path) -> None:
    tools = ToolTable()
    registry, report = build_registry(tools=tools)
    assert any(label.startswith("example (llmos_example_plugin)") for label in report.loaded)
    assert not report.failed
    assert "example.count" in registry and "example.count" not in registry.core
    assert tools.names() == ["slugify"]
    assert "tool.run" in registry and "tool.list" in registry


def test_example_works_end_to_end_through_dispatch(
    example_plugin: Path, settings: Settings, workspace: Path
) -> None:
    (workspace / "docs").mkdir()
    (workspace / "docs" / "a.txt").write_text("one two\nthree\n")
    (workspace / "secret.txt").write_text("no")
    with System(settings) as system:
        proc = system.spawn("app", workspace, patterns=["tool.list"], remembered=False)
        proc.caps.add(system.authority.mint("example.count", scope="docs"))
        proc.caps.add(system.authority.mint("tool.run", scope="slugify"))
        counted = system.dispatch(proc, {"call": "example.count", "path": "docs/a.txt"})
        assert counted.ok, counted.message
        assert counted.value == {"path": "docs/a.txt", "lines": 2, "words": 3, "bytes": 14}
        denied = system.dispatch(proc, {"call": "example.count", "path": "secret.txt"})
        assert denied.code == "E_PERM" and "example.count on secret.txt" in (denied.message or "")
        escape = system.dispatch(proc, {"call": "example.count", "path": "../../etc/passwd"})
        assert escape.code == "E_PERM"
        slug = system.dispatch(
            proc, {"call": "tool.run", "name": "slugify", "args": {"text": "Hello, World!"}}
        )
        assert slug.ok and slug.value["output"] == "hello-world"
        bad = system.dispatch(proc, {"call": "tool.run", "name": "slugify", "args": {"t": 1}})
        assert bad.code == "E_INVAL" and "'text' is a required property" in (bad.message or "")
        listed = system.dispatch(proc, {"call": "tool.list"})
        assert [t["name"] for t in listed.value["tools"]] == ["slugify"]


def test_example_tool_from_the_command_line(
    example_plugin: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = ["tool.run", "name=slugify", 'args={"text": "Big Plans 2025"}']
    assert main(["-w", str(workspace), "call", *words]) != 0, "the shell does not hold tool.run"
    assert "missing capability tool.run on slugify" in capsys.readouterr().err
    assert main(["-w", str(workspace), "call", *words, "--allow", "tool.run"]) == 0
    assert "big-plans-2025" in capsys.readouterr().out
