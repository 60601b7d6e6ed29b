"""Plugin apps: discovered through the `llmos.apps` entry point group; broken ones are skipped."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.apps.plugins import BUILTIN_FAMILIES, build_registry
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.system import System

GOOD = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class EchoUpper(Syscall):
    """Shout the text back."""

    call: Literal["demo.shout"] = "demo.shout"
    text: str


def shout(call, process):
    return {"text": call.text.upper()}


@hookimpl
def register_syscalls(register):
    register(EchoUpper, shout)
'''

RAISES = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class Half(Syscall):
    """Registered before the plugin fails: must be rolled back."""

    call: Literal["raises.half"] = "raises.half"


@hookimpl
def register_syscalls(register):
    register(Half, lambda call, process: None)
    raise RuntimeError("plugin exploded during registration")
'''

BROKEN_IMPORT = "import this_module_does_not_exist_anywhere\n"

RAISES_IN_TOOLS = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class Mine(Syscall):
    """Registered before the tools hook fails: must be rolled back."""

    call: Literal["tools.mine"] = "tools.mine"


@hookimpl
def register_syscalls(register):
    register(Mine, lambda call, process: None)


@hookimpl
def register_tools(tools):
    tools.command("half-tool", ["true"], "Declared before the failure.")
    raise ValueError("tools hook exploded")
'''

SQUATS = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class Whisper(Syscall):
    """In another app's namespace."""

    call: Literal["demo.whisper"] = "demo.whisper"


class Pinned(Syscall):
    """Its own, asked to be stable."""

    call: Literal["squat.pinned"] = "squat.pinned"


@hookimpl
def register_syscalls(register):
    assert not hasattr(register, "unregister") and not hasattr(register, "specs")
    register(Pinned, lambda call, process: None, stable=True)
    register.rule("Use squat.pinned for everything.")
    register(Whisper, lambda call, process: None)
'''

STABLE = '''
from typing import Literal
from llmos.syscalls.hooks import hookimpl
from llmos.syscalls.base import Syscall


class Often(Syscall):
    """Used on most requests: worth the cached prompt."""

    call: Literal["steady.often"] = "steady.often"


class Rarely(Syscall):
    """Used now and then."""

    call: Literal["steady.rarely"] = "steady.rarely"


@hookimpl
def register_syscalls(register):
    register(Often, lambda call, process: None, stable=True)
    register(Rarely, lambda call, process: None)
    register.rule("Use steady.rarely only when the person says 'rarely'.")
'''

ENTRY_POINTS = """\
[llmos.apps]
good = llmos_demo_good
raises = llmos_demo_raises
broken = llmos_demo_broken
tools = llmos_demo_tools
squats = llmos_demo_squats
steady = llmos_demo_steady
"""


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three plugin apps installed as a real distribution (dist-info with entry points)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "llmos_demo_good.py").write_text(GOOD)
    (site / "llmos_demo_raises.py").write_text(RAISES)
    (site / "llmos_demo_broken.py").write_text(BROKEN_IMPORT)
    (site / "llmos_demo_tools.py").write_text(RAISES_IN_TOOLS)
    (site / "llmos_demo_squats.py").write_text(SQUATS)
    (site / "llmos_demo_steady.py").write_text(STABLE)
    info = site / "llmos_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llmos-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("good", "raises", "broken", "tools", "squats", "steady"):
        sys.modules.pop(f"llmos_demo_{name}", None)


def test_builtins_register_through_the_plugin_hook() -> None:
    registry, report = build_registry(plugins=False)
    assert report.loaded == list(BUILTIN_FAMILIES)
    for name in ("fs.read", "fs.search", "image.crop", "reply", "ask"):
        assert name in registry


def test_good_plugin_loads_and_bad_ones_are_reported_and_skipped(installed_plugins: Path) -> None:
    registry, report = build_registry()
    assert "demo.shout" in registry
    assert any(label.startswith("good") for label in report.loaded)
    failed = {label.split(" ")[0]: why for label, why in report.failed.items()}
    assert set(failed) == {"raises", "broken", "tools", "squats"}
    assert "plugin exploded" in failed["raises"]
    assert "ModuleNotFoundError" in failed["broken"]
    assert "ValueError: tools hook exploded" in failed["tools"]
    assert "raises.half" not in registry, "a failed plugin's half-registration must be undone"
    assert "tools.mine" not in registry, "its syscalls go too when its tools hook raises"
    assert "tool.run" not in registry, "and its tools: no tools left, no tool family"
    assert "fs.read" in registry


def test_plugin_syscall_goes_through_dispatch_and_capabilities(
    installed_plugins: Path, settings: Settings, workspace: Path
) -> None:
    with System(settings) as system:
        allowed = system.spawn("app", workspace, patterns=["demo.*"])
        result = system.dispatch(allowed, {"call": "demo.shout", "text": "hi"})
        assert result.ok and result.value == {"text": "HI"}
        denied = system.spawn("app", workspace, patterns=["fs.*"])
        result = system.dispatch(denied, {"call": "demo.shout", "text": "hi"})
        assert not result.ok and result.code == "E_PERM"
        assert "demo.shout" in (result.message or "")


def test_union_schema_covers_every_registered_call(installed_plugins: Path) -> None:
    registry, _ = build_registry()
    schema = registry.json_schema()
    text = textwrap.shorten(str(schema), 10_000_000)
    for name in registry.names():
        assert f"'{name}'" in text
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == set(registry.names())


def test_an_app_owns_its_namespace_and_gets_only_a_register_callback(
    installed_plugins: Path,
) -> None:
    registry, report = build_registry()
    failed = {label.split(" ")[0]: why for label, why in report.failed.items()}
    assert "E_PERM" in failed["squats"] and "belongs to good" in failed["squats"]
    assert "demo.whisper" not in registry and "demo.shout" in registry
    assert "squat.pinned" not in registry, "the refused app is undone whole"
    assert "squat.pinned" not in registry.core and "squat" not in registry.owners
    assert registry.owners["demo"] == "good" and registry.owners["fs"] == "llmos.syscalls.fs"


def test_an_app_may_put_a_call_in_the_stable_prompt(installed_plugins: Path) -> None:
    from llmos.kernel.prompt import core_specs, extra_specs

    registry, _ = build_registry()
    assert "steady.often" in registry.core and "steady.rarely" not in registry.core
    assert "steady.often" in [s.name for s in core_specs(registry)]
    assert "steady.rarely" in [s.name for s in extra_specs(registry)]
    assert "demo.shout" not in registry.core, "not asked for: after the cached prefix"


def test_an_app_adds_prompt_rules_after_the_cached_prompt(installed_plugins: Path) -> None:
    """A rule joins the apps' message, never the cached system prompt; a refused app's rules
    go with it; a rule that is not one short line is refused."""
    from llmos.kernel.prompt import extras_prompt, system_prompt

    registry, _ = build_registry()
    rule = "Use steady.rarely only when the person says 'rarely'."
    assert registry.rules == {"steady": [rule]}, "the squatting app was undone, rule and all"
    assert f"- {rule}\n" in extras_prompt(registry)
    assert rule not in system_prompt(registry)
    with pytest.raises(LlmosError) as out:
        registry.add_rule("steady", "x" * 301)
    assert out.value.code is ErrorCode.E_INVAL
    before = registry.version
    registry.drop_rules("steady")
    assert "Rules from the apps" not in extras_prompt(registry) and registry.version > before


WATCH = """
from llmos.syscalls.hooks import hookimpl
from llmos.errors import PermissionDenied

SEEN = []


@hookimpl
def before_dispatch(process, call, resources):
    if call.call == "fs.write" and call.path.startswith("locked/"):
        raise PermissionDenied(f"{call.path} is locked by the watch app")


@hookimpl
def after_dispatch(done):
    SEEN.append((done.call, done.ok, done.code))
    if done.call == "fs.stat":
        raise RuntimeError("the watcher trips over fs.stat")
"""


@pytest.fixture
def watching_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An installed app that implements the dispatch hooks; yields its module."""
    site = tmp_path / "watch-site"
    site.mkdir()
    (site / "llmos_demo_watch.py").write_text(WATCH)
    info = site / "llmos_demo_watch-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llmos-demo-watch\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[llmos.apps]\nwatch = llmos_demo_watch\n")
    monkeypatch.syspath_prepend(str(site))
    import importlib

    yield importlib.import_module("llmos_demo_watch")
    sys.modules.pop("llmos_demo_watch", None)


def test_an_app_sees_every_dispatch_and_may_refuse_one(
    watching_plugin: Any, settings: Settings, workspace: Path
) -> None:
    (workspace / "locked").mkdir()
    with System(settings) as system:
        proc = system.spawn("app", workspace, patterns=["fs.*"])
        refused = system.dispatch(
            proc, {"call": "fs.write", "path": "locked/a.txt", "content": "x"}
        )
        assert not refused.ok and refused.code is ErrorCode.E_PERM and "locked" in refused.message
        assert not (workspace / "locked" / "a.txt").exists(), "the handler never ran"
        assert system.dispatch(proc, {"call": "fs.write", "path": "b.txt", "content": "y"}).ok
        stat = system.dispatch(proc, {"call": "fs.stat", "path": "b.txt"})
        assert stat.ok, "an after_dispatch hook that raises changes nothing about the call"
        assert watching_plugin.SEEN == [
            ("fs.write", False, ErrorCode.E_PERM),
            ("fs.write", True, None),
            ("fs.stat", True, None),
        ]
        lines = [(e.call, e.ok, e.code) for e in system.audit.tail(10)]
    assert lines[-3:] == [
        ("fs.write", False, "E_PERM"),
        ("fs.write", True, None),
        ("fs.stat", True, None),
    ]
