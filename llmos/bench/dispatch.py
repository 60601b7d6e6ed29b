"""`llmos bench dispatch`: microseconds per dispatch of fs.stat (validate + capability + audit),
and what the undo journal adds to an overwrite of a 1 MB file."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from llmos.config import Settings
from llmos.syscalls.context import Process
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
            overwrite = _overwrites(system, process, ws, max(5, min(50, n // 200)))
    figures = {
        "n": float(n),
        "p50_us": statistics.median(samples),
        "p99_us": percentile(samples, 99),
        "mean_us": statistics.fmean(samples),
        **overwrite,
    }
    print(f"dispatch fs.stat x{n} (validate + capability check + run + audit append)")
    print(
        f"  p50 {figures['p50_us']:.1f} µs   p99 {figures['p99_us']:.1f} µs   "
        f"mean {figures['mean_us']:.1f} µs   audit lines {log_lines}   cpus {os.cpu_count()}"
    )
    print(
        f"fs.write over a 1 MB file x{int(overwrite['overwrites'])}: "
        f"p50 {overwrite['overwrite_p50_ms']:.2f} ms with the undo journal, "
        f"{overwrite['overwrite_bare_p50_ms']:.2f} ms without "
        f"(journal {overwrite['overwrite_p50_ms'] - overwrite['overwrite_bare_p50_ms']:.2f} ms)"
    )
    return figures


def _overwrites(system: System, process: Process, ws: Path, n: int) -> dict[str, float]:
    """p50 milliseconds of an fs.write over a 1 MB file, with and without the undo journal
    (the journal saves the old bytes first), so its cost per overwrite is its own figure."""
    big = os.urandom(1 << 19).hex()  # 1 MiB of text
    raw = {"call": "fs.write", "path": "big.txt", "content": "x", "mode": "overwrite"}
    timings: dict[str, list[float]] = {"journal": [], "bare": []}
    journal = system.dispatcher.journal
    for _ in range(n):
        for kind in ("journal", "bare"):
            (ws / "big.txt").write_text(big)
            system.dispatcher.journal = journal if kind == "journal" else None
            start = time.perf_counter()
            result = system.dispatch(process, raw)
            timings[kind].append((time.perf_counter() - start) * 1000)
            if not result.ok:
                raise RuntimeError(f"fs.write failed during the benchmark: {result.message}")
    system.dispatcher.journal = journal
    return {
        "overwrites": float(n),
        "overwrite_p50_ms": statistics.median(timings["journal"]),
        "overwrite_bare_p50_ms": statistics.median(timings["bare"]),
    }
