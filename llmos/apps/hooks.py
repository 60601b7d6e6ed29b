"""The plugin API's public import path: `from llmos.apps.hooks import hookimpl`. The hook
specs live in the syscall ABI (`llmos.syscalls.hooks`), where the built-in families use them
too; this module keeps the path plugin authors already import from."""

from llmos.syscalls.hooks import PROJECT, AppSpec, ExampleAdder, ToolDeclarer, hookimpl, hookspec

__all__ = ["PROJECT", "AppSpec", "ExampleAdder", "ToolDeclarer", "hookimpl", "hookspec"]
