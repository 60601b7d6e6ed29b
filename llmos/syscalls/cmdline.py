"""Parses `NAME k=v ...` words (from `llmos call` and the shell's `!`) into a raw syscall."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Container
from typing import Any

from llmos.errors import ErrorCode, LlmosError


def parse_value(text: str) -> Any:
    """Strings stay strings (pydantic coerces `3`, `true` for typed fields); JSON arrays parse."""
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def parse_words(words: list[str], positional: str | None = None) -> dict[str, Any]:
    """`["fs.read", "path=a.txt"]` -> `{"call": "fs.read", "path": "a.txt"}`.

    With `positional` (the call's one required field), words that are not `key=value` are
    joined into that field: `["reply", "hi", "there"]` -> `{"call": "reply", "text": "hi there"}`.
    """
    if not words:
        raise LlmosError(ErrorCode.E_INVAL, "no syscall given; try: fs.list path=.")
    raw: dict[str, Any] = {"call": words[0]}
    bare: list[str] = []
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if sep and key:
            raw[key] = parse_value(value)
        elif positional is not None:
            bare.append(word)
        else:
            raise LlmosError(ErrorCode.E_INVAL, f"expected key=value, got {word!r}")
    if bare:
        if positional in raw:
            raise LlmosError(
                ErrorCode.E_INVAL, f"{positional} given twice: as {positional}= and as {bare[0]!r}"
            )
        raw[str(positional)] = " ".join(bare)
    return raw


_KEY_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def is_direct_call(line: str, names: Container[str]) -> bool:
    """Whether a shell line is a syscall to run directly rather than a request for the kernel.

    It is when it starts with `!` or `{` (a JSON call), or with a known syscall name that has a
    dot (`fs.list`) or is followed by a `key=value` word (`reply text=hi`). A known name without
    a dot and without such a word reads as plain words: "reply to the email from Bob" and "ask
    mom about dinner" are requests.
    """
    line = line.strip()
    if line.startswith(("!", "{")):
        return True
    words = line.split()
    if not words or words[0] not in names:
        return False
    return "." in words[0] or any(_KEY_VALUE.match(word) for word in words[1:])


def parse_line(line: str, positional: str | None = None) -> dict[str, Any]:
    """Parse one shell line (`fs.write path=a.txt content="two words"`), or a JSON object;
    `positional` as for `parse_words`."""
    line = line.strip()
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise LlmosError(ErrorCode.E_INVAL, f"bad JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LlmosError(ErrorCode.E_INVAL, "a syscall must be a JSON object")
        return data
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"cannot parse: {exc}") from None
    return parse_words(words, positional)
