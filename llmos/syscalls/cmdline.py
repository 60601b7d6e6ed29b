"""Parses `NAME k=v ...` words (from `llmos call` and the shell's `!`) into a raw syscall."""

from __future__ import annotations

import json
import shlex
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


def parse_words(words: list[str]) -> dict[str, Any]:
    """`["fs.read", "path=a.txt"]` -> `{"call": "fs.read", "path": "a.txt"}`."""
    if not words:
        raise LlmosError(ErrorCode.E_INVAL, "no syscall given; try: fs.list path=.")
    raw: dict[str, Any] = {"call": words[0]}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise LlmosError(ErrorCode.E_INVAL, f"expected key=value, got {word!r}")
        raw[key] = parse_value(value)
    return raw


def parse_line(line: str) -> dict[str, Any]:
    """Parse one shell line (`fs.write path=a.txt content="two words"`), or a JSON object."""
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
    return parse_words(words)
