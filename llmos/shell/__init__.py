"""The interactive shell: prompt-toolkit REPL, grant prompts and rendering."""
