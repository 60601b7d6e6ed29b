"""The syscall ABI: typed call models, results with stable error codes, and the registry table."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
)

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    model_serializer,
)
from pydantic.fields import FieldInfo

from llmos.errors import ErrorCode, LlmosError
from llmos.limits import MAX_RULE_CHARS

if TYPE_CHECKING:
    from llmos.syscalls.context import Process


JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list[Any],
    "object": dict[str, Any],
}
"""The Python type of each JSON Schema type (an eval case's tool, an MCP server's tool)."""

RESERVED_FAMILIES = ("fs", "image", "mem", "tool", "reply", "ask", "calc")
"""Call families only llmos itself registers (a plugin's calls are named after the app)."""

Effect = Literal["write", "delete", "remember", "forget", "run"]
"""What a call may do beyond reading, as the turn policy and the grant prompt name it."""


class Syscall(BaseModel):
    """Base of every syscall model: a literal `call` discriminator plus typed arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    one_of: ClassVar[tuple[str, ...]] = ()
    """Optional fields of which exactly one must be given; the grammar enforces it too."""

    needs_files: ClassVar[bool] = False
    """The call works on files already there (reads, lists, searches, moves or converts them):
    in an empty workspace the kernel's grammar offers it only when the request speaks of files
    or names one, so "hello" or "which train do I take?" goes to a reply or memory instead."""

    needs_recall: ClassVar[bool] = False
    """The call looks up what the person said or kept before (mem.search): the kernel's grammar
    offers it only when the request asks something, speaks of the person ("my", "I") or of
    remembering, so "sing me a song" is answered, not searched for in memory."""

    needs_numbers: ClassVar[bool] = False
    """The call works on numbers (calc): the kernel's grammar offers it only once the turn
    holds a digit (in the request, a result or a recalled memory), so "what time is it in
    Tokyo?" cannot be answered by computing 12*30+1250."""

    pure: ClassVar[bool] = False
    """The call only works something out (arithmetic): no effect outside the kernel, nothing
    read or written. A single-step evaluation lets the kernel make it and scores the call it
    makes next, as a person sees only the answer it leads to."""

    makes_folders: ClassVar[bool] = False
    """The call creates a folder: offered only when the request speaks of one (a folder word,
    a path ending in "/" or with no file extension), so "create notes/ideas.md with ..." cannot
    become a folder named ideas.md."""

    changes_files: ClassVar[bool] = False
    """The call creates, changes or removes files (or forgets memories). In a turn whose
    request asks for no change, the kernel's grammar leaves such calls out, so text planted
    in a file it reads cannot make it write or delete anything."""
    effects: ClassVar[frozenset[Effect]] = frozenset()
    """What the call does beyond reading: "write" (create or change files), "delete",
    "remember" (store a memory), "forget", "run" (a tool). Empty (read only) unless declared;
    a call with `changes_files` and no effects declared is a "write". The dispatcher refuses,
    or asks about, an effect the turn's request did not ask for (`Process.allows`)."""

    call: str

    @classmethod
    def declared_effects(cls) -> frozenset[Effect]:
        """The call's effects, "write" for a call that only says it changes files."""
        if cls.effects or not cls.changes_files:
            return cls.effects
        return frozenset({"write"})

    def replaces(self) -> tuple[str, ...]:
        """The paths whose file, where one exists, this call would replace (its text lost):
        an overwriting write, a copy or move told to overwrite. In a turn, the dispatcher lets
        a call replace only a file the person named (`Process.named`)."""
        return ()


Existing = Literal["file", "dir", "any"]
"""What an input path must name: a file, a folder, or either."""


class Grounded(NamedTuple):
    """What an argument made by `existing_path` may name."""

    kind: Existing
    patterns: bool
    named: bool
    real: bool = False


def existing_path(
    kind: Existing = "any",
    *,
    patterns: bool = False,
    named: bool = False,
    real: bool = False,
    **field: Any,
) -> Any:
    """A Field for an argument that names something that already exists in the workspace (a
    file to read, a move's source). The kernel's grammar lets the model write only real paths
    of that kind there (or ones the request itself names, or a glob when `patterns`), so it
    cannot invent a name. With `named` (for destroying calls), only paths the person's own
    words in the conversation name, and globs only when the request asks for many: a fooled
    or guessing model cannot pick a file to delete. With `real`, only paths that exist (an
    append or an edit of a file that is not there is a new file: fs.write's). Other keyword
    arguments go to `Field`."""
    extra: dict[str, Any] = {"existing": kind, "patterns": patterns, "named": named}
    if real:
        extra["real"] = True
    return Field(json_schema_extra=extra, **field)


def existing_kind(info: FieldInfo) -> Grounded | None:
    """What a field made by `existing_path` may name, else None."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("existing") in ("file", "dir", "any"):
        kind: Existing = extra["existing"]  # type: ignore[assignment]
        return Grounded(
            kind, bool(extra.get("patterns")), bool(extra.get("named")), bool(extra.get("real"))
        )
    return None


def _marked(info: FieldInfo, key: str) -> bool:
    """Whether a field carries the marker `key` its Field helper put in json_schema_extra."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(key))


def fixed(**field: Any) -> Any:
    """A Field the kernel's grammar and prompt leave out, so a kernel call keeps its default (a
    direct call may still set it): a small model guesses such knobs (`max_hits=1` cut a
    search's lines to one). Keyword arguments go to `Field`."""
    return Field(json_schema_extra={"fixed": True}, **field)


def is_fixed(info: FieldInfo) -> bool:
    """Whether a field was made by `fixed`."""
    return _marked(info, "fixed")


def narrowing_glob(**field: Any) -> Any:
    """A Field for a glob that narrows a call to some files: the kernel may write one only when
    the request asks about many files ("which log files ...", "every .py file"); otherwise a
    small model narrows a search to files it guessed (`logs/*` for the cabin's wifi password).
    Keyword arguments go to `Field`."""
    return Field(json_schema_extra={"narrowing": True}, **field)


def is_narrowing(info: FieldInfo) -> bool:
    """Whether a field was made by `narrowing_glob`."""
    return _marked(info, "narrowing")


def target_path(**field: Any) -> Any:
    """A Field for where a move or copy puts things. When the person called that name a
    folder ("into the done folder") and no file has it, the kernel passes it as a folder
    (with a trailing "/"), so the call moves into it instead of renaming to it."""
    return Field(json_schema_extra={"target": True}, **field)


def is_target(info: FieldInfo) -> bool:
    """Whether a field was made by `target_path`."""
    return _marked(info, "target")


class Quiet(BaseModel):
    """A result model whose fields named in `quiet` are left out of its data while None: fields
    added for some inputs only (a document's `format`), so the result of every other input
    stays byte for byte what it was, in the prompt (its KV cache) and for callers."""

    quiet: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_quiet(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.quiet:
            if data.get(name, 0) is None:
                del data[name]
        return data


class SyscallResult(BaseModel):
    """What every dispatch returns: `ok` with a value, or an error with a stable code."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    call: str
    value: Any = None
    code: ErrorCode | None = None
    message: str | None = None

    @classmethod
    def success(cls, call: str, value: Any) -> SyscallResult:
        """An ok result; pydantic values are dumped to plain JSON-able data."""
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return cls.model_construct(ok=True, call=call, value=value, code=None, message=None)

    @classmethod
    def failure(cls, call: str, code: ErrorCode, message: str) -> SyscallResult:
        """An error result carrying a stable code and a message a person can act on."""
        return cls(ok=False, call=call, code=code, message=message)

    def render(self) -> str:
        """One human-readable line (or block) for the shell and `llmos call`."""
        if not self.ok:
            return f"{self.code}: {self.message}"
        value = self.value
        if isinstance(value, dict):
            if isinstance(value.get("text"), str):
                more = " [truncated: more from offset {}]".format(value.get("next_offset"))
                return str(value["text"]) + (more if value.get("truncated") else "")
            if isinstance(value.get("entries"), list):
                return "\n".join([_entry_line(e) for e in value["entries"]] or ["(empty)"])
            if isinstance(value.get("hits"), list) and "query" in value:
                rows = [f"{h['path']}:{h['line']}: {h['text']}" for h in value["hits"]]
                return "\n".join(rows or ["(no matches)"])
        import json

        return json.dumps(value, indent=2, ensure_ascii=False)


def _entry_line(entry: dict[str, Any]) -> str:
    """One fs.list entry as the shell shows it: `notes.txt  18 B`, `docs/`, `x (link)`."""
    if entry["type"] == "file":
        return f"{entry['path']}  {entry['size']} B"
    if entry["type"] == "dir":
        return f"{entry['path']}/"
    return f"{entry['path']} ({entry['type']})"


C = TypeVar("C", bound=Syscall)

Handler = Callable[[C, "Process"], Any]
ResourceFn = Callable[[C, "Process"], Iterable[str]]


def _no_resources(call: Syscall, process: Process) -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class SyscallSpec(Generic[C]):
    """One row of the syscall table: model, result model, capability, handler, prompt line."""

    name: str
    model: type[C]
    handler: Handler[C]
    result: type[BaseModel] | None = None
    capability: str = ""
    resources: ResourceFn[C] = field(default=_no_resources)
    description: str = ""
    family: str = ""

    @property
    def cap_name(self) -> str:
        """The capability this call needs: its own name unless the spec says otherwise."""
        return self.capability or self.name


def call_name(model: type[Syscall]) -> str:
    """The literal value of a syscall model's `call` field."""
    annotation = model.model_fields["call"].annotation
    args: tuple[object, ...] = getattr(annotation, "__args__", ())
    value = args[0] if len(args) == 1 else None
    if not isinstance(value, str):
        raise TypeError(f"{model.__name__}.call must be a single Literal string")
    return value


class Registry:
    """The live syscall table; built-ins and plugins register into it the same way."""

    def __init__(self) -> None:
        self._specs: dict[str, SyscallSpec[Any]] = {}
        self.version = 0
        self.core: frozenset[str] = frozenset()
        self.reserved: frozenset[str] = frozenset()
        self.owners: dict[str, str] = {}
        """Which plugin owns each namespace (the part of a call's name before the dot)."""
        self.rules: dict[str, list[str]] = {}
        """Prompt rules plugins added, by plugin: shown after the cached prompt, with the
        calls registered after the core (`Registrar.rule`)."""
        self._adapter: TypeAdapter[Any] | None = None

    def register(
        self,
        model: type[C],
        handler: Handler[C],
        *,
        result: type[BaseModel] | None = None,
        capability: str = "",
        resources: ResourceFn[C] | None = None,
        description: str = "",
        system: bool = False,
    ) -> SyscallSpec[C]:
        """Add one syscall; its description defaults to the first line of the model's docstring.
        Once the core is marked, a built-in family's names are llmos's own (`system`)."""
        name = call_name(model)
        self._check_reserved(name, system)
        if name in self._specs:
            raise LlmosError(ErrorCode.E_EXISTS, f"syscall {name!r} is already registered")
        doc = (model.__doc__ or "").strip().splitlines()
        spec = SyscallSpec(
            name=name,
            model=model,
            handler=handler,
            result=result,
            capability=capability,
            resources=resources or _no_resources,
            description=description or (doc[0] if doc else name),
            family=name.split(".", 1)[0] if "." in name else "control",
        )
        self._specs[name] = spec
        self._changed()
        return spec

    def unregister(self, name: str, *, system: bool = False) -> None:
        """Remove a syscall (a per-case eval tool, an unloaded plugin); never a built-in one,
        unless llmos itself does it (`system`: the tool table re-registers `tool.run`)."""
        if name in self._specs:
            self._check_reserved(name, system)
        if self._specs.pop(name, None) is not None:
            self._changed()

    def _check_reserved(self, name: str, system: bool) -> None:
        """E_PERM for a plugin's change to the built-in families (fs, image, mem, tool, the
        control calls) once the core is marked: a plugin may neither replace `fs.read` nor
        add `image.upload`, which the default `image.*` grant would let run unasked."""
        if system or not self.core:
            return
        family = name.split(".", 1)[0]
        if name in self.core or family in self.reserved:
            raise LlmosError(
                ErrorCode.E_PERM,
                f"{name!r} is in llmos's own {family!r} family: an app may not add to it or "
                "replace it; name its calls after the app",
            )

    def _changed(self) -> None:
        self.version += 1
        self._adapter = None

    def add_rule(self, owner: str, text: str) -> None:
        """Add one prompt rule for `owner`'s calls: one line of at most MAX_RULE_CHARS."""
        line = " ".join(text.split())
        if not line or len(line) > MAX_RULE_CHARS:
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"a prompt rule is one line of 1 to {MAX_RULE_CHARS} characters, not {len(line)}",
            )
        self.rules.setdefault(owner, []).append(line)
        self._changed()

    def drop_rules(self, owner: str) -> None:
        """Take back every prompt rule `owner` added."""
        if self.rules.pop(owner, None):
            self._changed()

    def get(self, name: str) -> SyscallSpec[Any] | None:
        """The spec for a call name, or None."""
        return self._specs.get(name)

    def names(self) -> list[str]:
        """Registered call names, sorted."""
        return sorted(self._specs)

    def specs(self) -> list[SyscallSpec[Any]]:
        """Registered specs in a stable order for prompts and schemas: by family, in the order
        the families first registered (the plugin loader's, built-ins first), then in the order
        each family registered its calls (families list their most used calls first)."""
        position = {name: i for i, name in enumerate(self._specs)}
        families: dict[str, int] = {}
        for spec in self._specs.values():
            families.setdefault(spec.family, len(families))

        def key(spec: SyscallSpec[Any]) -> tuple[int, int]:
            return (families[spec.family], position[spec.name])

        return sorted(self._specs.values(), key=key)

    def mark_stable(self, names: Iterable[str]) -> None:
        """Add plugins' calls to the stable part of the prompt (they asked for it: the KV cache
        then keeps their descriptions too)."""
        added = frozenset(names) & self._specs.keys()
        if added - self.core:
            self.core |= added
            self._changed()

    def mark_core(self) -> None:
        """Record the calls registered so far as the core table (the built-in families): the
        kernel's stable prompt describes them, and later ones (apps, tools) come after it."""
        self.core = frozenset(self._specs)
        self.reserved = frozenset(RESERVED_FAMILIES) | {n.split(".", 1)[0] for n in self.core}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def adapter(self) -> TypeAdapter[Any]:
        """A TypeAdapter for the discriminated union of all registered calls, rebuilt on change."""
        if self._adapter is None:
            models = tuple(spec.model for spec in self.specs())
            if not models:
                raise LlmosError(ErrorCode.E_NOSYS, "no syscalls are registered")
            union: Any = models[0] if len(models) == 1 else Union[models]  # noqa: UP007
            self._adapter = TypeAdapter(Annotated[union, Field(discriminator="call")])
        return self._adapter

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the union of every registered call (one object per syscall)."""
        return self.adapter().json_schema()

    def parse(self, raw: Syscall | dict[str, Any]) -> Syscall:
        """Validate raw data into its typed syscall, or raise a typed E_NOSYS/E_INVAL error."""
        if isinstance(raw, Syscall):
            spec = self._specs.get(raw.call)
            if spec is None:
                raise LlmosError(ErrorCode.E_NOSYS, f"unknown syscall {raw.call!r}")
            if type(raw) is spec.model:
                return raw
            raw = raw.model_dump()
        if not isinstance(raw, dict):
            raise LlmosError(ErrorCode.E_INVAL, "a syscall must be a JSON object with a 'call'")
        name = raw.get("call")
        if not isinstance(name, str):
            raise LlmosError(ErrorCode.E_INVAL, "a syscall needs a string 'call' field")
        spec = self._specs.get(name)
        if spec is None:
            raise LlmosError(ErrorCode.E_NOSYS, f"unknown syscall {name!r}")
        try:
            call: Syscall = spec.model.model_validate(raw)
        except ValidationError as exc:
            raise LlmosError(ErrorCode.E_INVAL, describe_validation(name, exc)) from None
        return call


def describe_validation(name: str, exc: ValidationError) -> str:
    """A short, readable account of what was wrong with a call's arguments."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(call)"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid arguments for {name}: " + "; ".join(parts)


class Registrar:
    """The `register` callback a plugin's `register_syscalls` hook is given (built-ins get one
    too): it adds the plugin's syscalls to the live table, in a namespace the plugin owns (the
    part of the name before the dot; the first plugin to use one owns it, and the built-in
    families and control calls are llmos's), and keeps which ones it added, so a plugin that
    fails half-way is undone. `stable=True` asks for a call to join the kernel's cached prompt
    prefix (worth it for calls used on most requests; each one costs its description's tokens
    on every prompt). The plugin never holds the table itself."""

    def __init__(self, registry: Registry, owner: str, *, builtin: bool = False) -> None:
        self._registry = registry
        self.owner = owner
        self._builtin = builtin
        self.added: list[str] = []
        self.stable: list[str] = []

    def __call__(
        self,
        model: type[C],
        handler: Handler[C],
        *,
        result: type[BaseModel] | None = None,
        capability: str = "",
        resources: ResourceFn[C] | None = None,
        description: str = "",
        stable: bool = False,
    ) -> SyscallSpec[C]:
        """Register one syscall (the arguments are `Registry.register`'s, plus `stable`)."""
        name = call_name(model)
        namespace = name.split(".", 1)[0]
        holder = self._registry.owners.get(namespace)
        if holder is not None and holder != self.owner and not self._builtin:
            raise LlmosError(
                ErrorCode.E_PERM,
                f"{name!r}: the {namespace!r} namespace belongs to {holder}; name "
                "this plugin's calls after it",
            )
        spec = self._registry.register(
            model,
            handler,
            result=result,
            capability=capability,
            resources=resources,
            description=description,
            system=self._builtin,
        )
        self._registry.owners.setdefault(namespace, self.owner)
        self.added.append(name)
        if stable:
            self.stable.append(name)
        return spec

    def rule(self, text: str) -> None:
        """Add a line to the kernel's prompt about this plugin's calls ("use weather.now for
        today's weather, weather.week for the days ahead"). Rules are shown after the cached
        prompt, beside the calls of apps, so adding one costs no KV cache."""
        self._registry.add_rule(self.owner, text)

    def undo(self) -> None:
        """Take back every call this registrar added, its rules, and the namespaces it came to
        own."""
        for name in reversed(self.added):
            self._registry.unregister(name, system=self._builtin)
        for namespace, holder in list(self._registry.owners.items()):
            if holder == self.owner:
                del self._registry.owners[namespace]
        self._registry.drop_rules(self.owner)
        self.added.clear()
        self.stable.clear()
