"""`llmos bench sandbox`: what the walls cost a command tool's start, p50 over runs of `true`
through run_command: bare (llmos's environment, no limits), with the trimmed environment and
limits only (what `sandbox = false` gets), and sandboxed."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from llmos.bench.dispatch import percentile
from llmos.security.sandbox import Sandbox, coverage, landlock_abi
from llmos.syscalls.tool import run_command


def bench_sandbox(n: int = 20) -> dict[str, float]:
    """Time `n` runs of `true` each way in a scratch workspace; prints and returns figures (ms).
    Each run includes building the walls (ruleset, temp folder) and removing them."""
    program = shutil.which("true") or "/bin/true"
    abi = landlock_abi()
    figures: dict[str, float] = {"n": float(n), "landlock_abi": float(abi)}
    with tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp:
        ws = Path(tmp)
        for label, walls in (("bare", None), ("plain", False), ("sandboxed", True)):
            if walls and abi < 1:
                continue
            samples: list[float] = []
            for i in range(n + 2):
                start = time.perf_counter()
                if walls is None:
                    done = run_command([program], ws, 10, 1024)
                else:
                    with Sandbox(ws, program=program, timeout=10, landlock=walls) as box:
                        done = run_command([program], ws, 10, 1024, sandbox=box)
                if done.exit_code != 0:
                    raise RuntimeError(f"`true` failed {label}: {done.stderr!r}")
                if i >= 2:  # the first two warm the page cache and imports
                    samples.append((time.perf_counter() - start) * 1000)
            figures[f"{label}_p50_ms"] = statistics.median(samples)
            figures[f"{label}_p90_ms"] = percentile(samples, 90)
    print(f"sandbox start-up: `true` x{n} through run_command ({coverage(abi)})")
    for label in ("bare", "plain", "sandboxed"):
        if f"{label}_p50_ms" in figures:
            print(
                f"  {label:<9} p50 {figures[f'{label}_p50_ms']:.2f} ms   "
                f"p90 {figures[f'{label}_p90_ms']:.2f} ms"
            )
    if abi < 1:
        print("  sandboxed: not measured, this kernel has no Landlock")
    return figures
