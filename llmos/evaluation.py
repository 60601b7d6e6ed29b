"""`llmos eval`: run cases in the shared eval format (single-step, task and session cases)
against the kernel, each in a fresh sandbox, and report pass rates per family with timings."""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import create_model

from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.backend import Backend
from llmos.kernel.loop import Conversation, Event, Kernel
from llmos.pager import new_conversation
from llmos.security.capabilities import ANY
from llmos.syscalls.base import JSON_TYPES, Syscall
from llmos.syscalls.context import Process
from llmos.system import System

CASE_KEYS = frozenset(
    {"id", "intent", "turns", "setup", "tools", "expect", "check", "grant", "max_steps"}
)
TASK_ONLY_KEYS = ("turns", "grant", "max_steps")
SETUP_KEYS = frozenset({"files", "memory", "images", "documents"})
EXPECT_KEYS = frozenset({"call", "args"})
CHECK_KEYS = frozenset(
    {"files", "glob", "images", "reply", "memory", "calls", "no_calls", "no_escape"}
)
MATCHER_KEYS = frozenset({"contains", "regex", "any"})
FILE_KEYS = frozenset({"contains", "regex", "exists", "absent"})
GLOB_KEYS = frozenset({"pattern", "count", "count_min", "max_side"})
IMAGE_KEYS = frozenset({"max_side", "size"})
MEMORY_KEYS = frozenset({"query", "contains"})
DEFAULT_MAX_STEPS = 8
"""Steps a task case runs without `max_steps`: fixed by the eval format, not the kernel's limit."""


@dataclass
class CaseResult:
    """How one case went."""

    id: str
    family: str
    passed: bool
    seconds: float
    detail: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)


def load_cases(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every case from the given JSONL files, in order (blank lines skipped)."""
    cases: list[dict[str, Any]] = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    case = json.loads(line)
                except ValueError as exc:
                    raise LlmosError(
                        ErrorCode.E_INVAL, f"{path}:{number}: not JSON: {exc}"
                    ) from None
                if not isinstance(case, dict):
                    raise LlmosError(ErrorCode.E_INVAL, f"{path}:{number}: a case is a JSON object")
                cases.append(case)
    return cases


def tool_model(tool: dict[str, Any]) -> type[Syscall]:
    """A syscall model for a function-calling tool definition (name, description, parameters)."""
    name = str(tool["name"])
    params = tool.get("parameters") or {}
    required = set(params.get("required") or [])
    fields: dict[str, Any] = {"call": (Literal[name], name)}
    for key, prop in (params.get("properties") or {}).items():
        kind = JSON_TYPES.get(str(prop.get("type")), Any)
        if "enum" in prop:
            kind = Literal[tuple(prop["enum"])]
        fields[key] = (kind, ...) if key in required else (kind | None, None)
    model = create_model("Tool_" + re.sub(r"\W", "_", name), __base__=Syscall, **fields)
    model.__doc__ = str(tool.get("description") or name)
    return model


def family_of(case: dict[str, Any]) -> str:
    """The family a case counts under: fs, mem, image, tools, reply/ask, tasks or injection
    (task and session cases are tasks, or injection when they check nothing escaped or ran;
    "invalid" when a single-step case names no call to file it under)."""
    if "check" in case or "turns" in case or "expect" not in case:
        check = case.get("check")
        flags = check if isinstance(check, dict) else {}
        return "injection" if flags.get("no_escape") or flags.get("no_calls") else "tasks"
    if case.get("tools"):
        return "tools"
    expect = case["expect"]
    call = expect.get("call") if isinstance(expect, dict) else None
    if isinstance(call, dict):
        names = call.get("any")
        call = names[0] if isinstance(names, list) and names else None
    if not isinstance(call, str):
        return "invalid"
    if call in ("reply", "ask"):
        return "reply/ask"
    return call.split(".", 1)[0]


def _unknown(where: str, data: dict[str, Any], known: frozenset[str]) -> str:
    """A reason naming the keys of `data` the format does not define at `where` ("" if none)."""
    extra = sorted(str(k) for k in set(data) - known)
    if not extra:
        return ""
    keys = ", ".join(repr(k) for k in extra)
    plural = "s" if len(extra) > 1 else ""
    return f"unknown key{plural} {keys} in {where} (known there: {', '.join(sorted(known))})"


def _is_text(value: Any) -> bool:
    """True for a string with something in it (an id, request or name the runner can use)."""
    return isinstance(value, str) and bool(value.strip())


def _is_count(value: Any, least: int = 0) -> bool:
    """True for a whole number of at least `least` (JSON true is not 1 here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _regex_problem(where: str, value: Any) -> str:
    """Why `value` is not a usable regular expression ("" when it is)."""
    if not isinstance(value, str):
        return f"{where}: regex must be a string"
    try:
        re.compile(value)
    except re.error as exc:
        return f"{where}: bad regex {value!r}: {exc}"
    return ""


def _matcher_problem(where: str, value: Any) -> str:
    """Why `value` is not a text matcher (a string, or contains / regex / any)."""
    if isinstance(value, str):
        return ""
    if not isinstance(value, dict) or len(value) != 1:
        return f"{where}: a matcher is a string or one of {{contains|regex|any: ...}}"
    why = _unknown(where, value, MATCHER_KEYS)
    if why:
        return why
    if "contains" in value and not isinstance(value["contains"], str):
        return f"{where}: contains must be a string"
    if "regex" in value:
        return _regex_problem(where, value["regex"])
    if "any" in value:
        if not isinstance(value["any"], list) or not value["any"]:
            return f"{where}: any must be a non-empty list"
        return next((w for w in (_matcher_problem(where, v) for v in value["any"]) if w), "")
    return ""


def _setup_problem(setup: Any) -> str:
    """Why a case's `setup` cannot be built ("" when it can)."""
    if setup is None:
        return ""
    if not isinstance(setup, dict):
        return "setup must be an object"
    why = _unknown("setup", setup, SETUP_KEYS)
    if why:
        return why
    files = setup.get("files") or {}
    if not isinstance(files, dict) or not all(isinstance(t, str) for t in files.values()):
        return "setup.files must map paths to text"
    images = setup.get("images") or {}
    sizes_ok = isinstance(images, dict) and all(
        isinstance(s, list) and len(s) == 2 and all(_is_count(n, 1) for n in s)
        for s in images.values()
    )
    if not sizes_ok:
        return "setup.images must map paths to [width, height]"
    if not isinstance(setup.get("memory") or [], list):
        return "setup.memory must be a list of facts"
    documents = setup.get("documents") or {}
    if not isinstance(documents, dict):
        return "setup.documents must map paths to document descriptions"
    from llmos.documents.samples import problem

    return next((why for rel, spec in documents.items() if (why := problem(rel, spec))), "")


def _tools_problem(tools: Any) -> str:
    """Why a case's `tools` are not function definitions ("" when they are)."""
    if tools is None:
        return ""
    ok = isinstance(tools, list) and all(
        isinstance(t, dict) and _is_text(t.get("name")) for t in tools
    )
    return "" if ok else "tools must be a list of functions, each with a name"


def _expect_problem(expect: Any) -> str:
    """Why a single-step case's `expect` cannot be scored ("" when it can)."""
    if not isinstance(expect, dict):
        return "expect must be an object"
    why = _unknown("expect", expect, EXPECT_KEYS)
    if why:
        return why
    call = expect.get("call")
    if isinstance(call, dict):
        why = _unknown("expect.call", call, frozenset({"any"}))
        if why:
            return why
        call = call.get("any")
        if isinstance(call, list) and call and all(_is_text(c) for c in call):
            call = call[0]
    if not _is_text(call):
        return "expect.call must be a syscall name or {any: [names]}"
    if not isinstance(expect.get("args") or {}, dict):
        return "expect.args must be an object"
    return ""


def _file_checks_problem(files: Any) -> str:
    """Why `check.files` cannot be evaluated ("" when it can)."""
    if not isinstance(files, dict):
        return "check.files must map paths to matchers"
    for rel, want in files.items():
        where = f"check.files[{rel!r}]"
        if not isinstance(want, dict):
            return f"{where} must be an object"
        why = _unknown(where, want, FILE_KEYS)
        if why:
            return why
        if "contains" in want and not isinstance(want["contains"], str):
            return f"{where}: contains must be a string"
        if any(not isinstance(want.get(k, True), bool) for k in ("exists", "absent")):
            return f"{where}: exists and absent are true or false"
        if "regex" in want and (why := _regex_problem(where, want["regex"])):
            return why
    return ""


def _glob_checks_problem(globs: Any) -> str:
    """Why `check.glob` cannot be evaluated ("" when it can)."""
    if not isinstance(globs, list):
        return "check.glob must be a list of {pattern: ...} checks"
    for number, want in enumerate(globs):
        where = f"check.glob[{number}]"
        if not isinstance(want, dict):
            return f"{where} must be an object"
        why = _unknown(where, want, GLOB_KEYS)
        if why:
            return why
        if not _is_text(want.get("pattern")):
            return f"{where} needs a pattern"
        for key, least in (("count", 0), ("count_min", 0), ("max_side", 1)):
            if key in want and not _is_count(want[key], least):
                return f"{where}: {key} must be a whole number of at least {least}"
    return ""


def _image_checks_problem(images: Any) -> str:
    """Why `check.images` cannot be evaluated ("" when it can)."""
    if not isinstance(images, dict):
        return "check.images must map paths to {max_side|size: ...}"
    for rel, want in images.items():
        where = f"check.images[{rel!r}]"
        if not isinstance(want, dict):
            return f"{where} must be an object"
        why = _unknown(where, want, IMAGE_KEYS)
        if why:
            return why
        if "max_side" in want and not _is_count(want["max_side"], 1):
            return f"{where}: max_side must be a whole number of at least 1"
        size = want.get("size", [1, 1])
        if not (isinstance(size, list) and len(size) == 2 and all(_is_count(n, 1) for n in size)):
            return f"{where}: size must be [width, height]"
    return ""


def _check_problem(check: Any) -> str:
    """Why a task case's `check` cannot be evaluated ("" when it can)."""
    if not isinstance(check, dict):
        return "check must be an object"
    why = _unknown("check", check, CHECK_KEYS)
    if why:
        return why
    if "files" in check and (why := _file_checks_problem(check["files"])):
        return why
    if "glob" in check and (why := _glob_checks_problem(check["glob"])):
        return why
    if "images" in check and (why := _image_checks_problem(check["images"])):
        return why
    if "reply" in check and (why := _matcher_problem("check.reply", check["reply"])):
        return why
    if "memory" in check:
        memory = check["memory"]
        if not isinstance(memory, dict):
            return "check.memory must be {query, contains}"
        why = _unknown("check.memory", memory, MEMORY_KEYS)
        if why:
            return why
        if not (_is_text(memory.get("query")) and isinstance(memory.get("contains"), str)):
            return "check.memory needs a query and contains (strings)"
    for key in ("calls", "no_calls"):
        names = check.get(key, [])
        if not (isinstance(names, list) and all(_is_text(n) for n in names)):
            return f"check.{key} must be a list of syscall names"
    if not isinstance(check.get("no_escape", False), bool):
        return "check.no_escape must be true or false"
    return ""


def case_problem(case: dict[str, Any]) -> str:
    """Why a case cannot be run as written ("" when it can): a key the format does not define
    (at the top, in setup, expect or check, or inside a matcher) or a missing or mistyped part,
    so a suite written for a newer format fails clearly instead of passing by accident."""
    why = _unknown("the case", case, CASE_KEYS)
    if why:
        return why
    if "id" not in case:
        return "the case has no id"
    if ("intent" in case) == ("turns" in case):
        if "intent" in case:
            return "the case gives both intent and turns; a case has one of them"
        return "the case has neither intent nor turns"
    if "intent" in case and not _is_text(case["intent"]):
        return "intent must be a non-empty string"
    turns = case.get("turns", ["-"])
    if not (isinstance(turns, list) and turns and all(_is_text(t) for t in turns)):
        return "turns must be a non-empty list of requests"
    if ("expect" in case) == ("check" in case):
        if "expect" in case:
            return "the case gives both expect and check; a case has one of them"
        return "the case has neither expect (a single-step case) nor check (a task case)"
    if "expect" in case:
        for key in TASK_ONLY_KEYS:
            if key in case:
                return f"{key} belongs to task cases (with check), not to a single-step case"
    why = _setup_problem(case.get("setup")) or _tools_problem(case.get("tools"))
    if why:
        return why
    if "expect" in case:
        return _expect_problem(case["expect"])
    grants = case.get("grant", [])
    if not (isinstance(grants, list) and all(_is_text(g) for g in grants)):
        return 'grant must be a list of capability patterns ("fs.delete", "x on scope")'
    if "max_steps" in case and not _is_count(case["max_steps"], 1):
        return "max_steps must be a whole number of at least 1"
    return _check_problem(case["check"])


def _norm_path(value: str) -> str:
    return "/".join(p for p in value.strip().split("/") if p not in ("", "."))


def value_matches(expected: Any, actual: Any, key: str = "") -> bool:
    """The eval format's matchers: contains, regex, any, or equality after normalisation."""
    if isinstance(expected, dict):
        if "contains" in expected:
            return isinstance(actual, str) and str(expected["contains"]).lower() in actual.lower()
        if "regex" in expected:
            return isinstance(actual, str) and re.search(expected["regex"], actual) is not None
        if "any" in expected:
            return any(value_matches(e, actual, key) for e in expected["any"])
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(value_matches(e, a, key) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, str) and isinstance(actual, str):
        if key in ("path", "src", "dst", "output") or "/" in expected:
            return _norm_path(expected).lower() == _norm_path(actual).lower()
        return expected.strip().lower() == actual.strip().lower()
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return bool(expected == actual)


def call_matches(expect: dict[str, Any], call: dict[str, Any]) -> tuple[bool, str]:
    """Whether a decided call meets a single-step case's expectation, and why not."""
    want = expect["call"]
    names = want["any"] if isinstance(want, dict) else [want]
    if call.get("call") not in names:
        return False, f"called {call.get('call')}, expected {' or '.join(names)}"
    for key, value in (expect.get("args") or {}).items():
        if key not in call or call[key] is None:
            return False, f"argument {key} missing"
        if not value_matches(value, call[key], key):
            return False, f"{key}={call[key]!r} does not match {value!r}"
    return True, ""


class Sandbox:
    """A fresh workspace with a case's files, images and tools."""

    def __init__(self, system: System, case: dict[str, Any], root: Path) -> None:
        self.system = system
        self.root = root
        self.workspace = root / "ws"
        self.workspace.mkdir()
        setup = case.get("setup") or {}
        for rel, text in (setup.get("files") or {}).items():
            path = self.workspace / _norm_path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for rel, (width, height) in (setup.get("images") or {}).items():
            from PIL import Image

            path = self.workspace / _norm_path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (int(width), int(height)), (90, 140, 200)).save(path)
        if setup.get("documents"):
            from llmos.documents.samples import make

            for rel, spec in setup["documents"].items():
                make(self.workspace / _norm_path(rel), spec)
        for fact in setup.get("memory") or []:
            system.memory.store(str(fact), meta={"source": "eval setup"})
        self.tool_calls: list[dict[str, Any]] = []
        self.tools = [tool_model(t) for t in case.get("tools") or []]
        for model in self.tools:
            self.system.registry.register(model, self._tool_handler)
        patterns = [
            *system.settings.default_caps,
            *(t.model_fields["call"].default for t in self.tools),
        ]
        self.process: Process = system.spawn(
            "eval", self.workspace, patterns=patterns, remembered=False
        )
        self.initial_caps = len(self.process.caps.caps)

    def grant(self, patterns: Iterable[str]) -> None:
        """Hold each pattern (`fs.delete`, `mem.forget on mem:archival/x`, `fs.delete on old`)
        for this session, as a person answering "session" would; counted as the session's own,
        so no_escape does not take them for an escape. E_INVAL for a pattern naming no syscall
        or a scope leaving the workspace."""
        for pattern in patterns:
            call, sep, scope = pattern.strip().partition(" on ")
            call, scope = call.strip(), scope.strip()
            if call not in self.system.registry and not any(ch in call for ch in "*?["):
                raise LlmosError(ErrorCode.E_INVAL, f"grant {pattern!r}: no syscall {call!r}")
            if sep and not scope:
                raise LlmosError(ErrorCode.E_INVAL, f"grant {pattern!r}: 'on' needs a scope")
            resource = _norm_path(scope)
            if ".." in resource.split("/"):
                raise LlmosError(
                    ErrorCode.E_INVAL, f"grant {pattern!r}: a scope stays inside the workspace"
                )
            self.process.caps.add(self.system.authority.mint(call, scope=resource or ANY))
        self.initial_caps = len(self.process.caps.caps)

    def _tool_handler(self, call: Syscall, process: Process) -> dict[str, Any]:
        self.tool_calls.append(call.model_dump(mode="json"))
        return {"status": "ok", "note": f"{call.call} done (stub result for evaluation)"}

    def close(self) -> None:
        """Unregister the case's tools and forget what the case stored, so cases stay apart."""
        for model in self.tools:
            self.system.registry.unregister(model.model_fields["call"].default)
        if self.system.memory_opened:
            memory = self.system.memory
            memory.forget([r.id for r in memory.db.all()])


def executed_calls(events: list[Event]) -> list[dict[str, Any]]:
    """The calls that actually ran (a denied or failed call did not)."""
    out: list[dict[str, Any]] = []
    for event in events:
        ran = event.kind in ("reply", "ask") or (
            event.kind == "result" and event.result is not None and event.result.ok
        )
        if ran and event.call is not None:
            out.append(event.call)
    return out


def _escaped(sandbox: Sandbox, calls: list[dict[str, Any]]) -> str:
    """Why a run left its sandbox, or "" if it did not."""
    ws = str(sandbox.workspace)
    for call in calls:
        for value in call.values():
            outside = (
                isinstance(value, str)
                and value.startswith("/")
                and os.path.lexists(value)
                and not os.path.realpath(value).startswith(ws + os.sep)
                and not os.path.lexists(os.path.join(ws, value.lstrip("/")))
            )
            if outside:
                return f"{call['call']} ran on {value}, outside the workspace"
    held = len(sandbox.process.caps.caps)
    if held != sandbox.initial_caps:
        return f"capabilities grew from {sandbox.initial_caps} to {held}"
    return ""


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A workspace glob as a regex over relative paths: `*`, `?` and `[...]` within one folder,
    `**` across folders (`a/**/b` also matches `a/b`)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (close := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def glob_paths(root: Path, pattern: str) -> list[str]:
    """The paths (files and folders) under `root` matching a workspace glob, relative and
    sorted. Hidden names are skipped unless the pattern names one: they are the temp files an
    atomic write leaves for a moment, not outputs."""
    pattern = _norm_path(pattern)
    regex = _glob_regex(pattern)
    hidden_ok = any(part.startswith(".") for part in pattern.split("/"))
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        if not hidden_ok:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root).as_posix()
        for name in (*dirs, *files):
            if not hidden_ok and name.startswith("."):
                continue
            path = name if rel == "." else f"{rel}/{name}"
            if regex.fullmatch(path):
                found.append(path)
    return sorted(found)


def _image_size(path: Path) -> tuple[int, int] | None:
    """The (width, height) of the image at `path`, or None when it is not one."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return None


def _check_files(ws: Path, files: dict[str, dict[str, Any]]) -> str:
    """Why the workspace's files fail a `files` check ("" when they pass)."""
    for rel, want in files.items():
        path = ws / _norm_path(rel)
        if want.get("absent") is True or want.get("exists") is False:
            if os.path.lexists(path):
                return f"{rel} should be gone"
            continue
        if not path.exists():
            return f"{rel} does not exist"
        matcher = {k: v for k, v in want.items() if k in ("contains", "regex")}
        if not matcher:
            continue
        if not path.is_file():
            return f"{rel} is a folder, not a file whose content can match {matcher}"
        for key, value in matcher.items():
            if not value_matches({key: value}, path.read_text(errors="replace")):
                return f"{rel} content does not match {want}"
    return ""


def _check_globs(ws: Path, globs: list[dict[str, Any]]) -> str:
    """Why the workspace fails a `glob` check ("" when it passes). With neither count nor
    count_min, at least one path must match: max_side over no outputs is no pass."""
    for want in globs:
        pattern = str(want["pattern"])
        found = glob_paths(ws, pattern)
        if "count" in want and len(found) != want["count"]:
            return f"{len(found)} path(s) match {pattern}, expected {want['count']}: {found}"
        least = want.get("count_min", 0 if "count" in want else 1)
        if len(found) < least:
            return f"{len(found)} path(s) match {pattern}, expected at least {least}: {found}"
        if "max_side" in want:
            for rel in found:
                size = _image_size(ws / rel)
                if size is None:
                    return f"{rel} (matching {pattern}) is not an image"
                if max(size) > int(want["max_side"]):
                    return f"{rel} is {size}, over {want['max_side']}"
    return ""


def _check_images(ws: Path, images: dict[str, dict[str, Any]]) -> str:
    """Why the workspace's images fail an `images` check ("" when they pass)."""
    for rel, want in images.items():
        path = ws / _norm_path(rel)
        if not path.is_file():
            return f"image {rel} does not exist"
        size = _image_size(path)
        if size is None:
            return f"{rel} is not an image"
        if "max_side" in want and max(size) > int(want["max_side"]):
            return f"{rel} is {size}, over {want['max_side']}"
        if "size" in want and list(size) != list(want["size"]):
            return f"{rel} is {size}, expected {want['size']}"
    return ""


def check_task(
    case: dict[str, Any], sandbox: Sandbox, turns: list[list[Event]]
) -> tuple[bool, str]:
    """Evaluate a task case's `check` on the final state of its sandbox, given each turn's
    events: `reply` looks at the last turn, calls and escapes at every turn."""
    check = case["check"]
    ws = sandbox.workspace
    events = [e for turn in turns for e in turn]
    ran = executed_calls(events)
    names = {c.get("call") for c in ran}
    why = (
        _check_files(ws, check.get("files") or {})
        or _check_globs(ws, check.get("glob") or [])
        or _check_images(ws, check.get("images") or {})
    )
    if why:
        return False, why
    if "reply" in check:
        replies = [e.text for e in (turns[-1] if turns else []) if e.kind == "reply"]
        if not replies:
            return False, "the last turn ended without a reply"
        if not value_matches(check["reply"], replies[-1]):
            return False, f"reply {replies[-1]!r} does not match"
    for name in check.get("calls") or []:
        if name not in names:
            return False, f"{name} was never executed"
    for name in check.get("no_calls") or []:
        if name in names:
            return False, f"{name} was executed"
    if check.get("no_escape"):
        why = _escaped(sandbox, ran)
        if why:
            return False, why
    if "memory" in check:
        want = check["memory"]
        hits = sandbox.system.memory.search(str(want["query"]), k=5)
        if not any(str(want["contains"]).lower() in h.text.lower() for h in hits):
            return False, f"memory search {want['query']!r} finds no {want['contains']!r}"
    return True, ""


def _run_single_step(
    kernel: Kernel, case: dict[str, Any], sandbox: Sandbox, start: float
) -> CaseResult:
    """The first call the kernel would make for the case's intent, as the first step of a turn
    in its sandbox (workspace view, grounded paths and its check of a reply included), scored
    against `expect`."""
    family = family_of(case)
    try:
        call = kernel.first_call(sandbox.process, Conversation(), str(case["intent"]))
    except LlmosError as exc:
        return CaseResult(str(case["id"]), family, False, time.perf_counter() - start, exc.message)
    data = call.model_dump(mode="json")
    ok, why = call_matches(case["expect"], data)
    return CaseResult(str(case["id"]), family, ok, time.perf_counter() - start, why, [data])


def play(
    kernel: Kernel,
    case: dict[str, Any],
    sandbox: Sandbox,
    after_turn: Callable[[Conversation], None] | None = None,
) -> list[list[Event]]:
    """Run a case's intent, or a session case's turns one after another in one paged
    conversation (the shell's own, from new_conversation), within the case's `max_steps`;
    each turn's events. `after_turn` sees the conversation as each turn ends."""
    if "turns" in case:
        requests = [str(t) for t in case["turns"]]
        conversation = new_conversation(sandbox.root)
    else:
        requests, conversation = [str(case["intent"])], Conversation()
    saved = kernel.max_steps
    kernel.max_steps = int(case.get("max_steps", DEFAULT_MAX_STEPS))
    turns = []
    try:
        for request in requests:
            turns.append(list(kernel.turn(sandbox.process, conversation, request)))
            if after_turn is not None:
                after_turn(conversation)
    finally:
        kernel.max_steps = saved
    return turns


def _run_task(kernel: Kernel, case: dict[str, Any], sandbox: Sandbox, start: float) -> CaseResult:
    """Run a task case's intent, or a session case's turns one after another in one paged
    conversation (the shell's own, from new_conversation), then evaluate its check."""
    family = family_of(case)
    try:
        sandbox.grant(case.get("grant") or [])
    except LlmosError as exc:
        return CaseResult(str(case["id"]), family, False, time.perf_counter() - start, exc.message)
    turns = play(kernel, case, sandbox)
    ok, why = check_task(case, sandbox, turns)
    calls = [e.call for turn in turns for e in turn if e.kind == "call" and e.call]
    return CaseResult(str(case["id"]), family, ok, time.perf_counter() - start, why, calls)


def system_of(kernel: Kernel) -> System:
    """The system a kernel of `llmos eval` runs on (the kernel itself knows only its protocol)."""
    assert isinstance(kernel.system, System), "eval runs the kernel on a System"
    return kernel.system


def run_case(kernel: Kernel, case: dict[str, Any]) -> CaseResult:
    """Run one case in a fresh sandbox (a case the runner cannot read fails, saying why)."""
    start = time.perf_counter()
    problem = case_problem(case)
    if problem:
        return CaseResult(str(case.get("id", "?")), family_of(case), False, 0.0, problem)
    with tempfile.TemporaryDirectory(prefix="llmos-eval-") as tmp:
        sandbox = Sandbox(system_of(kernel), case, Path(tmp))
        try:
            if "expect" in case:
                return _run_single_step(kernel, case, sandbox, start)
            return _run_task(kernel, case, sandbox, start)
        finally:
            sandbox.close()


def run_eval(
    system: System,
    backend: Backend,
    cases: list[dict[str, Any]],
    report: Callable[[CaseResult], None] | None = None,
) -> dict[str, Any]:
    """Run every case and return the summary (per-family pass rates, timings, model)."""
    kernel = Kernel(system, backend)
    warming = system.examples.warm()  # every case sees the examples, the first one too
    if warming is not None:
        warming.join()
    results: list[CaseResult] = []
    for case in cases:
        result = run_case(kernel, case)
        results.append(result)
        if report:
            report(result)
    by_family: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_family[r.family].append(r)
    seconds = sorted(r.seconds for r in results) or [0.0]
    return {
        "model": backend.name,
        "cases": len(results),
        "passed": sum(r.passed for r in results),
        "pass_rate": sum(r.passed for r in results) / max(1, len(results)),
        "families": {
            fam: {
                "passed": sum(r.passed for r in rs),
                "cases": len(rs),
                "pass_rate": sum(r.passed for r in rs) / len(rs),
            }
            for fam, rs in sorted(by_family.items())
        },
        "median_s": statistics.median(seconds),
        "p90_s": seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))],
        "results": [r.__dict__ for r in results],
    }
