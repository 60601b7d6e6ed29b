"""`python -m llmos`: the same as the `llmos` command (what an MCP client's configuration can
name when the console script is not on its PATH)."""

from llmos.cli import console

console()
