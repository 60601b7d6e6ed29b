"""GBNF for the live syscall table: the model can only emit a well-formed call of a registered
syscall, keys in a fixed order with `call` first (so the name is chosen before the arguments),
separators fixed as `json.dumps` writes them.

One description of each call's shape (`CallShape`, from the syscall's model and the workspace
snapshot) gives both the GBNF rule and `CallFormat`, with which a decoder can tell which text
the format forces next (`{"call": "`, the rest of a name or key once it is unambiguous, a
required key, `}`) and evaluate it in one batch instead of sampling it token by token.

We generate the grammar ourselves rather than through llama.cpp's JSON-Schema converter: that
converter breaks on `anyOf` (pydantic's Optional) and `$ref`/`$defs` (llama-cpp-python issues
1097 and 1048), and a fixed key order keeps the grammar small and decoding fast.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llmos.limits import GROUND_MAX_PATHS
from llmos.syscalls.base import (
    Registry,
    SyscallSpec,
    existing_kind,
    is_fixed,
    is_narrowing,
)

if typing.TYPE_CHECKING:
    from llmos.kernel.grounding import Snapshot

PRIMITIVES = r"""
ws ::= " "?
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
integer ::= "-"? ([0-9] | [1-9] [0-9]{1,15})
number ::= integer ("." [0-9]{1,12})? ([eE] [-+]? [0-9]{1,3})?
boolean ::= "true" | "false"
null ::= "null"
value ::= string | number | boolean | null | array | object
array ::= "[" ws ( value ( ws "," ws value ){0,64} )? ws "]"
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value ){0,32} )? ws "}"
string-list ::= "[" ws ( string ( ws "," ws string ){0,64} )? ws "]"
glob ::= "\"" [^"\\\x7F\x00-\x1F*?]* [*?] [^"\\\x7F\x00-\x1F]* "\""
""".strip()


def _quote(text: str) -> str:
    """A GBNF literal for the JSON text `"text"`."""
    escaped = text.replace("\\", "\\\\\\\\").replace('"', '\\\\\\"')
    return '"\\"' + escaped + '\\""'


def _literal(text: str) -> str:
    """A GBNF literal matching `text` exactly."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


def ordered_fields(spec: SyscallSpec[Any]) -> list[tuple[str, FieldInfo]]:
    """A call's arguments in the order the grammar writes them: required ones, then optional
    (those `fixed` to their defaults left out)."""
    fields = [(k, f) for k, f in spec.model.model_fields.items() if k != "call" and not is_fixed(f)]
    return [kf for kf in fields if kf[1].is_required()] + [
        kf for kf in fields if not kf[1].is_required()
    ]


def _ground_rule(kind: str, patterns: bool, named: bool = False) -> str:
    if named:
        base = "named" if kind.startswith("any") else f"named-{kind.partition('-')[0]}"
    else:
        base = kind
    return f"ground-{base}" + ("-or-glob" if patterns else "")


def _grounded_type(field: FieldInfo, ground: Snapshot | None) -> str | None:
    """The GBNF for a field that must name an existing path: one of the snapshot's real paths
    of its kind (or the request's own), a glob where allowed; a list of them for a list field.
    "" for a field that is not grounded (or no snapshot), None when nothing can fill it."""
    grounded = existing_kind(field)
    if grounded is None or ground is None:
        return ""
    patterns = grounded.patterns and ground.bulk
    kind = f"{grounded.kind}-real" if grounded.real else grounded.kind
    offered = ground.named_of(grounded.kind) if grounded.named else ground.choices(*_kind_of(kind))
    if not offered and not patterns:
        return None
    one = _ground_rule(kind, patterns, grounded.named)
    args = [a for a in get_args(field.annotation) if a is not type(None)]
    listed = get_origin(field.annotation) is list or any(get_origin(a) is list for a in args)
    single = field.annotation is str or str in args
    many = f'"[" ws ( {one} ( ws "," ws {one} ){{0,64}} )? ws "]"'
    if listed and single:
        return f"( {one} | {many} )"
    return many if listed else one


def _value_rule(field: FieldInfo, ground: Snapshot | None = None) -> str | None:
    """The GBNF for one argument's value: real paths for a grounded field, the field's own
    `gbnf` where it brings one, else its type's rule; None when nothing can fill it now."""
    if ground is not None and not ground.bulk and is_narrowing(field):
        return None
    kind = _grounded_type(field, ground)
    if kind is None:
        return None
    extra = field.json_schema_extra
    own = extra.get("gbnf") if isinstance(extra, dict) else None
    kind = kind or (f"( {own} )" if isinstance(own, str) else "")
    return kind or type_rule(field.annotation, nullable=field.is_required())


def _kind_of(kind: str) -> tuple[str, int, bool]:
    """`Snapshot.choices` arguments for a grounded rule's kind ("file-real": real files only)."""
    base, _, real = kind.partition("-")
    return base, GROUND_MAX_PATHS, bool(real)


def _ground_rules(ground: Snapshot) -> list[str]:
    rules = []

    def offer(kind: str, named: bool, paths: list[str]) -> None:
        options = " | ".join(_quote(p) for p in paths)
        rules.append(f"{_ground_rule(kind, False, named)} ::= {options or 'glob'}")
        rules.append(
            f"{_ground_rule(kind, True, named)} ::= {options + ' | ' if options else ''}glob"
        )

    for kind in ("file", "dir", "any", "file-real", "dir-real", "any-real"):
        offer(kind, False, ground.choices(*_kind_of(kind)))
    for kind in ("any", "dir", "file"):
        offer(kind, True, ground.named_of(kind))
    return rules


def callable_shapes(
    registry: Registry, only: list[str] | None = None, ground: Snapshot | None = None
) -> list[CallShape]:
    """The shape of every call that can be made now: all of them (or those in `only`), less
    those whose required grounded argument has no real path to name, and those that change
    files when the snapshot says the request asks for no change."""
    out = []
    frozen = ground is not None and not ground.changes
    for spec in registry.specs():
        if frozen and spec.model.changes_files:
            continue
        allows = ground.allows if ground is not None else None
        if allows is not None and spec.model.declared_effects() - allows:
            continue
        idle = ground is not None and not ground.entries and not ground.about_files
        if idle and spec.model.needs_files:
            continue
        if ground is not None and spec.model.makes_folders and not ground.folder_talk:
            continue
        if ground is not None and spec.model.needs_recall and not ground.about_memory:
            continue
        if ground is not None and spec.model.needs_numbers and not ground.numbers:
            continue
        if only is None or spec.name in only:
            shape = call_shape(spec, ground)
            if shape is not None:
                out.append(shape)
    return out


def grammar_of(shapes: list[CallShape], ground: Snapshot | None = None) -> str:
    """The GBNF text for one call of any of `shapes` (the grounded path rules with a snapshot)."""
    root = "root ::= " + " | ".join(_rule_name(s.name) for s in shapes)
    extra = _ground_rules(ground) if ground is not None else []
    own = list(dict.fromkeys(r for s in shapes for r in s.rules))
    return "\n".join([root, *(s.gbnf() for s in shapes), *extra, *own, PRIMITIVES]) + "\n"


def build_grammar(
    registry: Registry, only: list[str] | None = None, ground: Snapshot | None = None
) -> str:
    """The GBNF text for one call of any registered syscall (or of those named in `only`);
    with a snapshot, arguments that must name an existing path are limited to its paths."""
    return grammar_of(callable_shapes(registry, only, ground), ground)


def _own_rules(spec: SyscallSpec[Any]) -> list[str]:
    """The GBNF rules a syscall's fields bring for their own values (`gbnf_rules`)."""
    out = []
    for _, field in ordered_fields(spec):
        extra = field.json_schema_extra
        rules = extra.get("gbnf_rules") if isinstance(extra, dict) else None
        if isinstance(rules, str):
            out.append(rules)
    return out


HEAD = '{"call": "'
_NUMBER_CHARS = frozenset("-+0123456789.eE")


@dataclass(frozen=True)
class FieldShape:
    """One argument as the format writes it: its key, the GBNF `rule` of its value, `options`
    (a Literal's or a grounded path's JSON encodings, when the value is one of a few), and
    whether it is one `choice` of the call's `one_of` group (exactly one of them is written)."""

    key: str
    required: bool
    options: tuple[str, ...] | None = None
    rule: str = "value"
    choice: bool = False


@dataclass(frozen=True)
class CallShape:
    """One syscall's arguments in grammar order: the one description of a call's shape, from
    which both its GBNF rule (`gbnf`) and the decoder's forced text (`CallFormat`) come.
    `rules` are the GBNF rules its fields bring for their own values."""

    name: str
    fields: tuple[FieldShape, ...]
    rules: tuple[str, ...] = ()

    def gbnf(self) -> str:
        """The call's GBNF rule: `call` first, then required fields, then optional ones, in
        order; the `choice` fields become one choice of exactly one of them."""
        members: list[str] = []
        choice: list[str] = []
        for field in self.fields:
            member = f"{_literal(f', {json.dumps(field.key)}: ')} {field.rule}"
            if field.choice:
                if not choice:
                    members.append("")
                choice.append(member)
            else:
                members.append(member if field.required else f"( {member} )?")
        if choice:
            members[members.index("")] = "( " + " | ".join(choice) + " )"
        head = _literal('{"call": ' + json.dumps(self.name))
        return f'{_rule_name(self.name)} ::= {" ".join([head, *members])} "}}"'


def _options(annotation: Any) -> tuple[str, ...] | None:
    if get_origin(annotation) is Literal:
        return tuple(json.dumps(o) for o in get_args(annotation))
    return None


def _grounded_options(field: FieldInfo, ground: Snapshot | None) -> tuple[str, ...] | None:
    """A grounded single-path field's choices as JSON strings (so the decoder can finish a name
    once it is unambiguous); None where a glob or a list may be written instead."""
    grounded = existing_kind(field)
    if grounded is None or ground is None or grounded.patterns or field.annotation is not str:
        return None
    if grounded.named:
        paths = ground.named_of(grounded.kind)
    else:
        paths = ground.choices(grounded.kind, real_only=grounded.real)
    return tuple(json.dumps(p, ensure_ascii=False) for p in paths)


def call_shape(spec: SyscallSpec[Any], ground: Snapshot | None = None) -> CallShape | None:
    """`spec`'s shape now: with a snapshot, grounded fields take only real paths, and an
    optional one with none to take is left out; None when a required one has none."""
    one_of = set(getattr(spec.model, "one_of", ()))
    fields = []
    for key, field in ordered_fields(spec):
        rule = _value_rule(field, ground)
        if rule is None:
            if field.is_required() and key not in one_of:
                return None
            continue
        options = _options(field.annotation) or _grounded_options(field, ground)
        fields.append(FieldShape(key, field.is_required(), options, rule, key in one_of))
    if one_of and not any(f.choice for f in fields):
        return None
    return CallShape(spec.name, tuple(fields), tuple(_own_rules(spec)))


def _common_prefix(words: list[str]) -> str:
    if not words:
        return ""
    first, last = min(words), max(words)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def _choose(partial: str, words: list[str], closer: str) -> str:
    """Forced text to finish `partial` as one of `words` (then `closer`, once unambiguous).
    While several remain, only their common prefix up to the end of a word part, the
    separator left to the model ("mem" of mem.search and mem.store, not "mem." nor "mem.s"):
    its tokens are "mem" then ".store", and forcing "." or half a word splits them, after
    which it picks the wrong rest ("forget" where it meant "store")."""
    left = [w[len(partial) :] for w in words if w.startswith(partial)]
    if len(left) == 1:
        return left[0] + closer
    common = _common_prefix(left)
    cut = max((i for i, ch in enumerate(common) if not ch.isalnum()), default=0)
    return common[:cut]


def _scan_value(text: str, options: tuple[str, ...] | None) -> tuple[int | None, str]:
    """(length of the complete JSON value at the start of `text` or None, forced text)."""
    if options is not None:
        for option in options:
            if text.startswith(option):
                return len(option), ""
        return None, _choose(text, list(options), "")
    if not text:
        return None, ""
    first = text[0]
    for word in ("true", "false", "null"):
        if first == word[0]:
            return (len(word), "") if text.startswith(word) else (None, _choose(text, [word], ""))
    if first in _NUMBER_CHARS:
        n = 1
        while n < len(text) and text[n] in _NUMBER_CHARS:
            n += 1
        return (n, "") if n < len(text) else (None, "")
    depth, in_string, escape = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
                if depth == 0:
                    return i + 1, ""
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1, ""
    return None, ""


class CallFormat:
    """The grammar's shapes in Python: what text the format forces after a partial output."""

    def __init__(self, shapes: list[CallShape]) -> None:
        self.shapes = {s.name: s for s in shapes}

    @classmethod
    def from_registry(
        cls, registry: Registry, ground: Snapshot | None = None, only: list[str] | None = None
    ) -> CallFormat:
        """The format of every registered syscall (every one callable now, with a snapshot;
        only those in `only` when given)."""
        return cls(callable_shapes(registry, only, ground))

    def forced(self, text: str) -> tuple[str, bool]:
        """(the text the format forces next, whether the call is already complete).

        Whitespace the format forces is left to the model (its tokens merge a space with what
        follows, and splitting them would push it off its usual tokens)."""
        out = ""
        while True:
            chunk, done = self._step(text + out)
            if done:
                return out, True
            if not chunk or chunk.isspace():
                return out.rstrip(" "), False
            out += chunk

    def _step(self, text: str) -> tuple[str, bool]:
        if len(text) < len(HEAD):
            return (HEAD[len(text) :] if HEAD.startswith(text) else ""), False
        if not text.startswith(HEAD):
            return "", False
        end = text.find('"', len(HEAD))
        if end < 0:
            return _choose(text[len(HEAD) :], list(self.shapes), '"'), False
        shape = self.shapes.get(text[len(HEAD) : end])
        if shape is None:
            return "", False
        return self._members(shape, text[end + 1 :])

    @staticmethod
    def _members(shape: CallShape, rest: str) -> tuple[str, bool]:
        index = 0
        while True:
            allowed = [f for f in shape.fields[index:]]
            if allowed and allowed[0].required:
                allowed = allowed[:1]
            if rest == "":
                if not allowed:
                    return "}", False
                if allowed[0].required:
                    return f", {json.dumps(allowed[0].key)}: ", False
                return "", False
            if rest[0] == "}":
                return "", rest == "}"
            sep = ', "'
            if len(rest) < len(sep):
                return (sep[len(rest) :] if sep.startswith(rest) and allowed else ""), False
            if not rest.startswith(sep):
                return "", False
            rest = rest[len(sep) :]
            close = rest.find('"')
            keys = [f.key for f in allowed]
            if close < 0:
                return _choose(rest, keys, '": '), False
            if rest[:close] not in keys:
                return "", False
            index += keys.index(rest[:close])
            field = shape.fields[index]
            index += 1
            rest = rest[close + 1 :]
            colon = ": "
            if len(rest) < len(colon):
                return (colon[len(rest) :] if colon.startswith(rest) else ""), False
            rest = rest[len(colon) :]
            size, forced = _scan_value(rest, field.options)
            if size is None:
                return forced, False
            rest = rest[size:]


@dataclass(frozen=True)
class Constraint:
    """Everything a backend may use to constrain one call: the GBNF, the JSON Schema (for
    servers that take one) and the format's forced text (for a decoder that fast-forwards).

    `names`, when some registered calls cannot be made now, constrains just a call's name to
    any registered one: a decoder first lets the model name the call it wants from the whole
    table, so a wish for one that is not offered ("rename it" wants fs.move, with nothing to
    move) is seen as such rather than slid into the one sibling left (fs.write)."""

    grammar: str
    schema: dict[str, Any]
    format: CallFormat
    names: Constraint | None = None

    @property
    def callable(self) -> list[str]:
        """The calls this constraint lets out."""
        return list(self.format.shapes)


def names_constraint(names: list[str]) -> Constraint:
    """A constraint whose whole output is `{"call": NAME}` for one of `names`."""
    shapes = [CallShape(n, ()) for n in names]
    root = "root ::= " + " | ".join(_rule_name(n) for n in names)
    return Constraint("\n".join([root, *(s.gbnf() for s in shapes)]) + "\n", {}, CallFormat(shapes))


def wanted_name(text: str) -> str:
    """The call name in a names-only output (`{"call": "fs.move"}`), or ""."""
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    return str(data.get("call", "")) if isinstance(data, dict) else ""


CACHED_CONSTRAINTS = 4
"""Constraints a GrammarCache keeps (a step may need its own, one limited to fewer calls, and
a names-only one)."""


class GrammarCache:
    """Builds each constraint once per registry version and workspace snapshot (the table
    rarely changes; the workspace between some steps), keeping the last few."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._built: dict[tuple[object, ...], Constraint] = {}

    def constraint(
        self,
        ground: Snapshot | None = None,
        only: list[str] | None = None,
        *,
        probe: bool = True,
    ) -> Constraint:
        """The constraint for the current table, grounded in `ground` when given and limited to
        the calls in `only`; rebuilt only when one of them changed. With `probe` (and a call
        left out), it carries the names-only constraint over the whole table."""
        key = (
            self.registry.version,
            ground.key if ground is not None else None,
            tuple(only) if only is not None else None,
            probe,
        )
        built = self._built.pop(key, None)
        if built is None:
            shapes = callable_shapes(self.registry, only, ground)
            fmt = CallFormat(shapes)
            names = [s.name for s in self.registry.specs()]
            probing = probe and len(fmt.shapes) < len(names)
            built = Constraint(
                grammar_of(shapes, ground),
                self.registry.json_schema(),
                fmt,
                names_constraint(names) if probing else None,
            )
            while len(self._built) >= CACHED_CONSTRAINTS:
                self._built.pop(next(iter(self._built)))
        self._built[key] = built
        return built


def constraint_data(constraint: Constraint) -> dict[str, Any]:
    """A constraint as JSON data (for a model in another process: `llmos serve`)."""
    return {
        "grammar": constraint.grammar,
        "schema": constraint.schema,
        "shapes": [
            {
                "name": shape.name,
                "rules": list(shape.rules),
                "fields": [
                    {
                        "key": f.key,
                        "required": f.required,
                        "options": list(f.options) if f.options is not None else None,
                        "rule": f.rule,
                        "choice": f.choice,
                    }
                    for f in shape.fields
                ],
            }
            for shape in constraint.format.shapes.values()
        ],
        "names": constraint_data(constraint.names) if constraint.names is not None else None,
    }


def constraint_from_data(data: dict[str, Any]) -> Constraint:
    """The constraint `constraint_data` wrote."""
    shapes = [
        CallShape(
            str(s["name"]),
            tuple(
                FieldShape(
                    str(f["key"]),
                    bool(f["required"]),
                    tuple(f["options"]) if f.get("options") is not None else None,
                    str(f.get("rule", "value")),
                    bool(f.get("choice", False)),
                )
                for f in s["fields"]
            ),
            tuple(s.get("rules", ())),
        )
        for s in data["shapes"]
    ]
    names = data.get("names")
    return Constraint(
        str(data["grammar"]),
        dict(data.get("schema") or {}),
        CallFormat(shapes),
        constraint_from_data(names) if names else None,
    )
