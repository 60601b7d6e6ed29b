"""The syscall ABI: typed calls, the registry, the one dispatch path, and the built-in families."""
