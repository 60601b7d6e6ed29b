"""`llmos bench documents`: what reading documents and the text in images costs on this machine.

Each figure is a whole conversion as `fs.read` pays it the first time (the sandboxed converter
child started, its libraries imported, the file parsed, the answer read back), then the cache
hit every later read pays. The files are made by `samples.py`: a 10-page and a 50-page text
PDF, a 1,280x720 screenshot, a 3-page scanned PDF (OCR) and a 1,000-row sheet. The converter's
peak memory is its largest resident set (the kernel's accounting for waited-for children).
"""

from __future__ import annotations

import functools
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llmos.documents import Documents, samples


def _pages(count: int) -> list[str]:
    return [
        "\n".join(
            f"Line {line} of page {page + 1}: the quarterly report lists revenue of "
            f"{page * 1000 + line} euros for the northern region."
            for line in range(40)
        )
        for page in range(count)
    ]


def _timed(run: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and worst of `n` runs, in ms."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def bench_documents(n: int = 5) -> dict[str, float]:
    """Print and return the figures (ms, and MB for memory) over `n` runs each."""
    pdf10 = samples.pdf(_pages(10))
    pdf50 = samples.pdf(_pages(50))
    scanned = samples.pdf(["Scanned page one\nTotal: 310 EUR"] * 3, scanned=True)
    shot = samples.text_image(
        ["Backup failed", "Error 504: the server did not answer", "Retry in 5 minutes"],
        (1280, 720),
    )
    rows = [["day", "region", "sales"]] + [
        [f"2026-01-{d % 28 + 1:02d}", "north" if d % 2 else "south", d * 7] for d in range(1000)
    ]
    with tempfile.TemporaryDirectory(prefix="llmos-bench-") as tmp:
        folder = Path(tmp)
        shot.save(folder / "shot.png")
        png = (folder / "shot.png").read_bytes()
        xlsx = samples.xlsx({"Sales": rows})
        cases: list[tuple[str, bytes, str]] = [
            ("pdf_10_pages", pdf10, "pdf"),
            ("pdf_50_pages", pdf50, "pdf"),
            ("xlsx_1000_rows", xlsx, "xlsx"),
            ("ocr_1280x720", png, "image"),
            ("ocr_scanned_pdf_3_pages", scanned, "pdf"),
        ]
        uncached = Documents()
        figures: dict[str, float] = {"n": float(n)}
        print(f"documents: each conversion x{n} in the sandboxed converter (no cache)")
        for label, data, kind in cases:
            runs = max(1, n if "ocr" not in label else min(n, 3))
            p50, worst = _timed(functools.partial(uncached.read, data, kind, label), runs)
            figures[f"{label}_p50_ms"] = p50
            figures[f"{label}_max_ms"] = worst
            print(f"  {label:<24} p50 {p50:8.1f} ms   max {worst:8.1f} ms   ({len(data)} bytes)")
        cache = Documents(folder / "cache")
        cache.read(pdf10, "pdf", "pdf10")
        p50, worst = _timed(lambda: cache.read(pdf10, "pdf", "pdf10"), max(n, 20))
        figures["cache_hit_pdf_10_pages_p50_ms"] = p50
        print(f"  {'cache hit (10 pages)':<24} p50 {p50:8.2f} ms   max {worst:8.2f} ms")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures["converter_peak_rss_mb"] = peak
    print(f"  converter peak memory: {peak:.0f} MB")
    return figures
