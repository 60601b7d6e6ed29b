"""`llmos bench dispatch`: microseconds per dispatch of fs.stat (validate + capability + audit)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from llmos.config import Settings
from llmos.system import System


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `samples`, nearest-rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def bench_dispatch(n: int = 10_000) -> dict[str, float]:
    """Time `n` fs.stat dispatches in a scratch home and workspace; prints and returns figures."""
    with tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp:
        home, ws = Path(tmp, "home"), Path(tmp, "ws")
        ws.mkdir()
        (ws / "notes.txt").write_text("hello\n")
        with System(Settings(home=home), plugins=False) as system:
            process = system.spawn("bench", ws)
            raw = {"call": "fs.stat", "path": "notes.txt"}
            for _ in range(min(200, n)):
                system.dispatch(process, raw)
            samples: list[float] = []
            clock = time.perf_counter_ns
            for _ in range(n):
                start = clock()
                result = system.dispatch(process, raw)
                samples.append((clock() - start) / 1000)
                if not result.ok:
                    raise RuntimeError(f"fs.stat failed during the benchmark: {result.message}")
            with open(system.audit.path, "rb") as log:
                log_lines = sum(1 for _ in log)
    figures = {
        "n": float(n),
        "p50_us": statistics.median(samples),
        "p99_us": percentile(samples, 99),
        "mean_us": statistics.fmean(samples),
    }
    print(f"dispatch fs.stat x{n} (validate + capability check + run + audit append)")
    print(
        f"  p50 {figures['p50_us']:.1f} µs   p99 {figures['p99_us']:.1f} µs   "
        f"mean {figures['mean_us']:.1f} µs   audit lines {log_lines}   cpus {os.cpu_count()}"
    )
    return figures
