"""An example llmos plugin app: the `example.count` syscall and the `slugify` tool."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from llmos.apps.hooks import hookimpl
from llmos.errors import ErrorCode, LlmosError
from llmos.syscalls.context import Process
from llmos.syscalls.base import Registrar, Syscall
from llmos.syscalls.tool import ToolTable

MAX_COUNT_BYTES = 16 * 1024 * 1024
"""Files larger than this are refused (E_TOOBIG): counting must stay quick."""


class ExampleCount(Syscall):
    """Count the lines, words and bytes of a text file."""

    call: Literal["example.count"] = "example.count"
    path: str = Field(description="Path inside the workspace, e.g. notes.txt")


class ExampleCountResult(BaseModel):
    """What was counted."""

    path: str
    lines: int
    words: int
    bytes: int


def count(call: ExampleCount, process: Process) -> ExampleCountResult:
    """Read the file through the workspace (confined, no symlink escapes) and count it."""
    with process.workspace.locate(call.path) as loc:
        try:
            fd = os.open(loc.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=loc.dir_fd)
        except FileNotFoundError:
            raise LlmosError(ErrorCode.E_NOENT, f"{call.path}: no such file") from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_COUNT_BYTES + 1)
    if len(data) > MAX_COUNT_BYTES:
        raise LlmosError(ErrorCode.E_TOOBIG, f"{call.path}: over {MAX_COUNT_BYTES} bytes")
    text = data.decode("utf-8", errors="replace")
    return ExampleCountResult(
        path=loc.rel, lines=text.count("\n"), words=len(text.split()), bytes=len(data)
    )


def _path(call: ExampleCount, process: Process) -> Iterable[str]:
    """The capability resource: the workspace path, so `example.count on docs` is a scope."""
    return [process.workspace.relpath(call.path)]


def slugify(text: str) -> str:
    """Turn text into a lower-case, dash-separated slug for file names."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@hookimpl
def register_syscalls(register: Registrar) -> None:
    """Add example.count to the syscall table (in the `example` namespace, which this app then
    owns)."""
    register(ExampleCount, count, result=ExampleCountResult, resources=_path)


@hookimpl
def register_tools(tools: ToolTable) -> None:
    """Declare the slugify tool (run by tool.run)."""
    tools.function(
        slugify,
        args={
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 1000}},
            "required": ["text"],
            "additionalProperties": False,
        },
    )
