"""llmos: a shell whose kernel is a local language model turning intents into typed syscalls."""

__version__ = "0.1.0"
