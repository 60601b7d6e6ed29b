"""Configuration: one pydantic-settings object (LLMOS_ env, LLMOS_HOME/config.toml), passed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _default_home() -> Path:
    return Path.home() / ".llmos"


class McpServerSpec(BaseModel):
    """One MCP server llmos may start (`[mcp.servers.NAME]` in config.toml, `[mcp.NAME]` in an
    app manifest): its tools become the syscalls `NAME.<tool>`."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1, description="The program and its arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    sandbox: bool = Field(
        default=True,
        description="Run it inside the command tools' walls (Landlock, no network); false runs "
        "it with the user's full rights.",
    )
    network: bool = Field(default=False, description="Let the sandboxed server use the network.")
    read: list[str] = Field(
        default_factory=list, description="Folders outside the workspace it may read."
    )
    timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds one call may take.")


class McpSettings(BaseModel):
    """The `[mcp]` table: the servers whose tools llmos offers as syscalls."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[str, McpServerSpec] = Field(default_factory=dict)


class Settings(BaseSettings):
    """All of llmos's settings; environment variables win over `LLMOS_HOME/config.toml`."""

    model_config = SettingsConfigDict(env_prefix="LLMOS_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Where llmos keeps its state.")
    model: str | None = Field(default=None, description="GGUF path or installed model name.")
    server: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible server to use instead."
    )
    server_constraint: Literal["grammar", "json_schema"] = Field(
        default="grammar",
        description="How the server is held to one syscall: the GBNF in `grammar` (llama.cpp's "
        "llama-server and llama-cpp-python's server) or an OpenAI json_schema response format "
        "(vLLM and others).",
    )
    server_slots: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Completions the server decodes at once, which the scheduler keeps in "
        "flight; 0 asks the server (llama.cpp's llama-server says in /props), else 1.",
    )
    n_ctx: int = Field(default=4096, ge=512, description="The model's context window, tokens.")
    mcp: McpSettings = Field(
        default_factory=McpSettings, description="MCP servers whose tools become syscalls."
    )
    memory_server: str | None = Field(
        default=None,
        description="URL of a Chroma server for the memory index; a local index when unset.",
    )
    memory_encrypt: bool = Field(
        default=False,
        description=(
            "Encrypt memory at rest (AES-256-GCM under LLMOS_HOME/keys/memory.key, made on first "
            "use): kept facts, their tags, paged-out turns with their metadata and saved "
            "sessions are sealed; the search indexes (memory's and the files') are kept in "
            "memory and rebuilt on open; the audit keeps digests of argument values. Turning it "
            "on seals an existing store when it is next opened. Off by default: it protects a "
            "copy of LLMOS_HOME only when the key is kept apart from it, a lost key loses the "
            "memory, and each start rebuilds the indexes."
        ),
    )
    memory_embedder: Path | None = Field(
        default=None,
        description="A sentence-transformers model folder; the packaged all-MiniLM-L6-v2 if unset.",
    )
    learn_from_use: bool = Field(
        default=True,
        description=(
            "Keep a shell turn that went right as an example for requests like it: one that "
            "ended in a reply with no call failed, was not undone, and was not corrected or "
            "asked again by the next request (see `llmos learn list`; `llmos learn off` stops "
            "all lessons)."
        ),
    )
    tidy_idle_s: float = Field(
        default=300.0,
        ge=0,
        description=(
            "Seconds the shell waits at its prompt before tidying what llmos keeps (merging "
            "learned examples, marking facts stored twice or replaced, see `:tidy`); it stops "
            "when a request comes. 0 turns it off."
        ),
    )
    journal_max_mb: int = Field(
        default=256,
        ge=1,
        description="Most space the undo journal keeps; the oldest change sets go first.",
    )
    default_caps: list[str] = Field(
        default_factory=lambda: [
            "fs.read",
            "fs.write",
            "fs.append",
            "fs.edit",
            "fs.list",
            "fs.stat",
            "fs.move",
            "fs.copy",
            "fs.mkdir",
            "fs.search",
            "image.*",
            "mem.store",
            "mem.search",
            "calc",
            "reply",
            "ask",
        ],
        description=(
            "Syscall patterns a shell session holds on its whole workspace. Deleting is not "
            "among them (fs.delete, mem.forget): a delete asks the person (or, with no one to "
            "ask, fails with E_PERM), so a model fooled by a file's text cannot destroy "
            "anything unasked."
        ),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read `config.toml` from the home given (`Settings(home=X)` reads X's), else the one
        the environment (or default) names."""
        import os

        given = getattr(init_settings, "init_kwargs", {}).get("home")
        home = Path(given or os.environ.get("LLMOS_HOME") or _default_home())
        toml = TomlConfigSettingsSource(settings_cls, toml_file=home / "config.toml")
        return (init_settings, env_settings, toml)

    def ensure_home(self) -> Path:
        """Create the home folder, private to the user, and return it."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.home

    def dump(self) -> dict[str, Any]:
        """Settings as plain JSON-able data, for `llmos model info` and the shell."""
        return self.model_dump(mode="json")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # a nested table (`[mcp]`'s servers) kept as an inline one
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot write {type(value).__name__} to config.toml")


def set_config_value(home: Path, key: str, value: object) -> Path:
    """Set one top-level key in `home/config.toml`, keeping the others, written atomically
    (for `llmos model use`: the choice outlives the command)."""
    import tomllib

    from llmos.atomic import write_atomic

    path = home / "config.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    data[key] = value
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    for name, table in tables:
        lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path
