"""The kernel: processes, and (later) the model backend, prompt and step loop."""
