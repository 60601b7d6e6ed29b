"""The line parser: which shell lines are direct syscalls, and how their words become a call."""

from __future__ import annotations

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.syscalls.cmdline import is_direct_call, parse_line, parse_words

NAMES = {"fs.list", "fs.read", "fs.write", "reply", "ask", "calc"}


@pytest.mark.parametrize(
    "line",
    [
        "fs.list",
        "fs.read path=a.txt",
        "  fs.read notes.txt",
        "reply text=hi",
        'ask question="where to?"',
        "!reply hi",
        "!fs.list",
        "!",
        "!nonsense",
        '{"call": "fs.list"}',
        "calc expr=1+2",
    ],
)
def test_direct_calls(line: str) -> None:
    assert is_direct_call(line, NAMES)


@pytest.mark.parametrize(
    "line",
    [
        "reply to the email from Bob",
        "ask mom about dinner",
        "reply to Bob's mail: say yes",  # an apostrophe is no parse error here
        "calc how much is 2+2",
        "please tidy my files",
        "what does fs.read do?",
        "reply = answer?",
        "",
        "   ",
    ],
)
def test_requests_for_the_kernel(line: str) -> None:
    assert not is_direct_call(line, NAMES)


def test_words_become_a_call() -> None:
    assert parse_line('fs.write path=a.txt content="two words"') == {
        "call": "fs.write",
        "path": "a.txt",
        "content": "two words",
    }
    assert parse_words(["fs.list", "paths=[1, 2]"]) == {"call": "fs.list", "paths": [1, 2]}
    assert parse_line('{"call": "fs.list", "path": "."}') == {"call": "fs.list", "path": "."}


def test_bare_words_fill_the_one_required_field() -> None:
    assert parse_line("reply hi there", "text") == {"call": "reply", "text": "hi there"}
    assert parse_line("fs.read notes.txt", "path") == {"call": "fs.read", "path": "notes.txt"}
    assert parse_line('reply "two  spaces" kept', "text") == {
        "call": "reply",
        "text": "two  spaces kept",
    }
    with pytest.raises(LlmosError, match="given twice"):
        parse_line("reply text=a b", "text")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("reply hi", "expected key=value, got 'hi'"),
        ('fs.read path="open', "cannot parse"),
        ("{not json", "bad JSON"),
        ("[1, 2]", "expected key=value"),
        ("", "no syscall given"),
        ("fs.read =x", "expected key=value"),
    ],
)
def test_bad_lines_are_clear_errors(line: str, needle: str) -> None:
    with pytest.raises(LlmosError) as err:
        parse_line(line)
    assert err.value.code is ErrorCode.E_INVAL and needle in err.value.message
