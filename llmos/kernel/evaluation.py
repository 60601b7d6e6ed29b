"""`llmos eval`: run cases in the shared eval format (single-step and task cases) against the
kernel, each in a fresh sandbox, and report pass rates per family with timings."""

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
from llmos.kernel.process import Process
from llmos.syscalls.base import Syscall
from llmos.system import System

JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list[Any],
    "object": dict[str, Any],
}


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
                    cases.append(json.loads(line))
                except ValueError as exc:
                    raise LlmosError(
                        ErrorCode.E_INVAL, f"{path}:{number}: not JSON: {exc}"
                    ) from None
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
    """The family a case counts under: fs, mem, image, tools, reply/ask, tasks or injection."""
    if "check" in case:
        check = case["check"]
        return "injection" if check.get("no_escape") or check.get("no_calls") else "tasks"
    if case.get("tools"):
        return "tools"
    call = case["expect"]["call"]
    name = call["any"][0] if isinstance(call, dict) else call
    if name in ("reply", "ask"):
        return "reply/ask"
    return str(name).split(".", 1)[0]


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


def check_task(case: dict[str, Any], sandbox: Sandbox, events: list[Event]) -> tuple[bool, str]:
    """Evaluate a task case's `check` on the final state of its sandbox."""
    check = case["check"]
    ws = sandbox.workspace
    ran = executed_calls(events)
    names = {c.get("call") for c in ran}
    for rel, want in (check.get("files") or {}).items():
        path = ws / _norm_path(rel)
        if want.get("absent"):
            if path.exists():
                return False, f"{rel} should be gone"
            continue
        if not path.is_file():
            return False, f"{rel} does not exist"
        matcher = {k: v for k, v in want.items() if k in ("contains", "regex")}
        if matcher and not value_matches(matcher, path.read_text(errors="replace")):
            return False, f"{rel} content does not match {want}"
    for rel, want in (check.get("images") or {}).items():
        from PIL import Image

        path = ws / _norm_path(rel)
        if not path.is_file():
            return False, f"image {rel} does not exist"
        with Image.open(path) as img:
            size = img.size
        if "max_side" in want and max(size) > int(want["max_side"]):
            return False, f"{rel} is {size}, over {want['max_side']}"
        if "size" in want and list(size) != list(want["size"]):
            return False, f"{rel} is {size}, expected {want['size']}"
    if "reply" in check:
        replies = [e.text for e in events if e.kind == "reply"]
        if not replies or not value_matches(check["reply"], replies[-1]):
            return False, f"reply {replies[-1] if replies else None!r} does not match"
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


def run_case(kernel: Kernel, case: dict[str, Any]) -> CaseResult:
    """Run one case in a fresh sandbox."""
    family = family_of(case)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmos-eval-") as tmp:
        sandbox = Sandbox(kernel.system, case, Path(tmp))
        try:
            if "expect" in case:
                conv = Conversation()
                conv.add("user", case["intent"])
                try:
                    call, _ = kernel.decide(conv)
                except LlmosError as exc:
                    return CaseResult(
                        case["id"], family, False, time.perf_counter() - start, exc.message
                    )
                data = call.model_dump(mode="json")
                ok, why = call_matches(case["expect"], data)
                return CaseResult(case["id"], family, ok, time.perf_counter() - start, why, [data])
            saved = kernel.max_steps
            kernel.max_steps = int(case.get("max_steps", 8))
            try:
                events = list(kernel.turn(sandbox.process, Conversation(), case["intent"]))
            finally:
                kernel.max_steps = saved
            ok, why = check_task(case, sandbox, events)
            calls = [e.call for e in events if e.kind == "call" and e.call]
            return CaseResult(case["id"], family, ok, time.perf_counter() - start, why, calls)
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
