"""Control calls that end a kernel turn: `reply` to answer, `ask` to ask the person something."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from llmos.apps.hooks import hookimpl
from llmos.kernel.process import Process
from llmos.syscalls.base import Registry, Syscall


class Reply(Syscall):
    """Answer the person and end the turn."""

    call: Literal["reply"] = "reply"
    text: str = Field(description="The answer, in plain words.")


class Ask(Syscall):
    """Ask the person a question when the request is unclear, and end the turn."""

    call: Literal["ask"] = "ask"
    question: str = Field(description="One short question.")


class TextResult(BaseModel):
    """Text shown to the person."""

    text: str


def reply(call: Reply, process: Process) -> TextResult:
    """Echo the answer so the caller can show it."""
    return TextResult(text=call.text)


def ask(call: Ask, process: Process) -> TextResult:
    """Echo the question so the caller can show it and wait for the answer."""
    return TextResult(text=call.question)


@hookimpl
def register_syscalls(registry: Registry) -> None:
    """Register the control calls."""
    registry.register(Reply, reply, result=TextResult)
    registry.register(Ask, ask, result=TextResult)
