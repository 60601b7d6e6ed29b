"""The grant prompt on a terminal: once / this session / always / deny, like Deno's."""

from __future__ import annotations

import sys

from llmos.security.capabilities import GrantAnswer, GrantRequest

CHOICES = {
    "o": GrantAnswer.ONCE,
    "once": GrantAnswer.ONCE,
    "y": GrantAnswer.ONCE,
    "s": GrantAnswer.SESSION,
    "session": GrantAnswer.SESSION,
    "a": GrantAnswer.ALWAYS,
    "always": GrantAnswer.ALWAYS,
    "d": GrantAnswer.DENY,
    "deny": GrantAnswer.DENY,
    "n": GrantAnswer.DENY,
    "": GrantAnswer.DENY,
}


def question(request: GrantRequest) -> str:
    """The text of the prompt for one missing capability, or for a call the request did not
    ask for (said why; only once or deny mean anything then)."""
    where = "" if request.resource in ("*",) else f" on {request.resource or '/'}"
    if request.reason:
        return (
            f"⚠ {request.process} wants {request.call}{where}, but {request.reason}. "
            "Allow it this once? [o]nce / [d]eny: "
        )
    return (
        f"⚠ {request.process} wants {request.call}{where}. "
        "Allow? [o]nce / [s]ession / [a]lways / [d]eny: "
    )


def parse_answer(text: str) -> GrantAnswer | None:
    """The answer a typed reply means, or None if it means nothing."""
    return CHOICES.get(text.strip().lower())


def terminal_grant(request: GrantRequest) -> GrantAnswer:
    """Ask on the controlling terminal; anything unclear twice, or end of input, is a deny."""
    for _ in range(2):
        sys.stderr.write(question(request))
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return GrantAnswer.DENY
        answer = parse_answer(line)
        if answer is not None:
            return answer
    return GrantAnswer.DENY
