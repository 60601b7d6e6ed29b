"""GBNF for the live syscall table: the model can only emit a well-formed call of a registered
syscall, keys in a fixed order with `call` first (so the name is chosen before the arguments).

We generate the grammar ourselves rather than through llama.cpp's JSON-Schema converter: that
converter breaks on `anyOf` (pydantic's Optional) and `$ref`/`$defs` (llama-cpp-python issues
1097 and 1048), and a fixed key order keeps the grammar small and decoding fast.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llmos.syscalls.base import Registry, SyscallSpec

PRIMITIVES = r"""
ws ::= " "?
string ::= "\"" char{0,4000} "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
integer ::= "-"? ([0-9] | [1-9] [0-9]{1,15})
number ::= integer ("." [0-9]{1,12})? ([eE] [-+]? [0-9]{1,3})?
boolean ::= "true" | "false"
null ::= "null"
value ::= string | number | boolean | null | array | object
array ::= "[" ws ( value ( ws "," ws value ){0,64} )? ws "]"
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value ){0,32} )? ws "}"
string-list ::= "[" ws ( string ( ws "," ws string ){0,64} )? ws "]"
""".strip()


def _quote(text: str) -> str:
    """A GBNF literal for the JSON text `"text"`."""
    escaped = text.replace("\\", "\\\\\\\\").replace('"', '\\\\\\"')
    return '"\\"' + escaped + '\\""'


def _rule_name(call: str) -> str:
    return "call-" + re.sub(r"[^a-zA-Z0-9]+", "-", call).strip("-").lower()


def type_rule(annotation: Any, *, nullable: bool = True) -> str:
    """The GBNF expression for a field's type (unknown types accept any JSON value).

    With `nullable=False`, `T | None` becomes just `T`: an optional argument is left out rather
    than written as null, which saves the model tokens and keeps calls short.
    """
    origin = get_origin(annotation)
    if origin is Literal:
        options = [a for a in get_args(annotation)]
        parts = [_quote(o) if isinstance(o, str) else str(o).lower() for o in options]
        return "(" + " | ".join(parts) + ")"
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        rule = " | ".join(type_rule(m) for m in members)
        if nullable and len(members) < len(get_args(annotation)):
            rule += " | null"
        return "(" + rule + ")"
    if origin is typing.Annotated:
        return type_rule(get_args(annotation)[0])
    if origin is list and get_args(annotation) in ((str,), ()):
        return "string-list"
    if origin in (list, tuple):
        return "array"
    if origin is dict or annotation is dict:
        return "object"
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return "value"


def _member(name: str, field: FieldInfo) -> str:
    kind = type_rule(field.annotation, nullable=field.is_required())
    return f'ws "," ws {_quote(name)} ws ":" ws {kind}'


def call_rule(spec: SyscallSpec[Any]) -> str:
    """One syscall's object: `call` first, then required fields, then optional ones, in order."""
    fields = {k: v for k, v in spec.model.model_fields.items() if k != "call"}
    required = [_member(k, f) for k, f in fields.items() if f.is_required()]
    optional = [f"( {_member(k, f)} )?" for k, f in fields.items() if not f.is_required()]
    head = f'"{{" ws {_quote("call")} ws ":" ws {_quote(spec.name)}'
    body = " ".join([head, *required, *optional])
    return f'{_rule_name(spec.name)} ::= {body} ws "}}"'


def build_grammar(registry: Registry, only: list[str] | None = None) -> str:
    """The GBNF text for one call of any registered syscall (or of those named in `only`)."""
    specs = [s for s in registry.specs() if only is None or s.name in only]
    rules = [call_rule(spec) for spec in specs]
    root = "root ::= ws ( " + " | ".join(_rule_name(s.name) for s in specs) + " ) ws"
    return "\n".join([root, *rules, PRIMITIVES]) + "\n"


class GrammarCache:
    """Builds the grammar text once per registry version (the table rarely changes)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._version = -1
        self._text = ""

    def text(self) -> str:
        """The current grammar, rebuilt only if the syscall table changed."""
        if self._version != self.registry.version:
            self._text = build_grammar(self.registry)
            self._version = self.registry.version
        return self._text
