"""`llmos bench serve`: what `llmos serve` saves, on the real default model, each figure beside
its in-process counterpart: one piped request (`printf 'what files are here?\\n' | llmos`) end to
end and its client's peak memory; `llmos call fs.stat` end to end; the daemon's memory against
two in-process shells'; and two piped shells plus `llmos run` at once on one daemon, all of them
succeeding with one memory store."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from llmos.client import connect

REQUEST = "what files are here?\n"
DECISION = re.compile(r"\((\d+(?:\.\d+)?)s\)\s*$", re.M)


def _timed(command: list[str], env: dict[str, str], stdin: str = "") -> tuple[float, int, str]:
    """(seconds, peak RSS in MB, stdout) of one command, measured by GNU time."""
    out = tempfile.NamedTemporaryFile(suffix=".time", delete=False)  # noqa: SIM115
    out.close()
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", out.name, *command],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    rss = int(Path(out.name).read_text().strip().splitlines()[-1]) // 1024
    os.unlink(out.name)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stderr[-500:]}")
    return seconds, rss, done.stdout


def _decisions(output: str) -> float:
    """The seconds the shell reports for each step's decision, added up."""
    return sum(float(m) for m in DECISION.findall(output))


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def bench_serve(model: str | None, repeat: int = 3) -> dict[str, Any]:
    """Run every measurement in a scratch home and workspace; prints and returns figures."""
    from llmos.config import Settings
    from llmos.kernel.models import resolve_model

    llmos = [sys.executable, "-m", "llmos"]
    figures: dict[str, Any] = {}
    settings = Settings()
    model = str(resolve_model(model or settings.model, settings.ensure_home()))
    with tempfile.TemporaryDirectory(prefix="llmos-bench-serve-") as tmp:
        home, ws = Path(tmp) / "home", Path(tmp) / "ws"
        ws.mkdir()
        (ws / "notes.txt").write_text("the train leaves at 9\n")
        (ws / "todo.md").write_text("- buy milk\n")
        env = {**os.environ, "LLMOS_HOME": str(home), "LLMOS_MODEL": model}
        alone = {**env, "LLMOS_NO_DAEMON": "1"}
        shell = [*llmos, "-w", str(ws)]
        runs = [_timed(shell, alone, REQUEST) for _ in range(repeat)]
        figures["in_process"] = {
            "seconds": statistics.median(r[0] for r in runs),
            "decisions_s": statistics.median(_decisions(r[2]) for r in runs),
            "peak_rss_mb": max(r[1] for r in runs),
        }
        call = [*shell, "call", "fs.stat", "path=notes.txt"]
        figures["call_in_process_s"] = statistics.median(
            _timed(call, alone)[0] for _ in range(repeat)
        )
        server = subprocess.Popen(
            [*llmos, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            _timed(shell, env, REQUEST)  # the first request waits for the model to load
            runs = [_timed(shell, env, REQUEST) for _ in range(repeat)]
            figures["daemon"] = {
                "seconds": statistics.median(r[0] for r in runs),
                "decisions_s": statistics.median(_decisions(r[2]) for r in runs),
                "client_peak_rss_mb": max(r[1] for r in runs),
            }
            figures["call_daemon_s"] = statistics.median(
                _timed(call, env)[0] for _ in range(repeat)
            )
            conn = connect(home)
            assert conn is not None
            samples = []
            for _ in range(50):
                conn = connect(home)
                assert conn is not None
                start = time.perf_counter()
                conn.send(
                    {
                        "op": "call",
                        "workspace": str(ws),
                        "call": {"call": "fs.stat", "path": "notes.txt"},
                        "allow": [],
                    }
                )
                conn.receive()
                samples.append((time.perf_counter() - start) * 1000)
                conn.close()
            figures["call_round_trip_p50_ms"] = statistics.median(samples)
            figures["together"] = _together(llmos, ws, env, Path(tmp))
            figures["daemon_rss_mb"] = _rss_mb(server.pid)
        finally:
            subprocess.run([*llmos, "serve", "--stop"], env=env, timeout=60, capture_output=True)
            server.wait(60)
    _print(figures)
    return figures


def _together(llmos: list[str], ws: Path, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    """Two piped shells and an app at once on the daemon; each one's status, and whether a fact
    one shell kept was found by the other afterwards."""
    app = tmp / "lister.toml"
    app.write_text(
        'name = "lister"\ncapabilities = ["fs.list"]\nprompt = "list the files"\n'
        '\n[[steps]]\ncall = "fs.list"\npath = "."\n'
    )
    shell = [*llmos, "-w", str(ws)]
    jobs = {
        "shell 1": (shell, "mem.store text='the gate code is 4321'\nwhat files are here?\n"),
        "shell 2": (shell, "how many files are here?\n"),
        "app": ([*shell, "run", str(app), "--yes"], ""),
    }
    status: dict[str, int] = {}

    def one(label: str) -> None:
        command, text = jobs[label]
        status[label] = subprocess.run(
            command, input=text, env=env, capture_output=True, text=True, timeout=600
        ).returncode

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(label,)) for label in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    found = subprocess.run(
        shell, input="mem.search query='gate code'\n", env=env, capture_output=True, text=True
    )
    return {"status": status, "seconds": seconds, "memory_shared": "4321" in found.stdout}


def _print(f: dict[str, Any]) -> None:
    alone, daemon = f["in_process"], f["daemon"]
    print("llmos serve, on the default model (s, MB):")
    print(
        f"  piped request in-process      {alone['seconds']:.2f} s (decisions "
        f"{alone['decisions_s']:.2f} s), peak {alone['peak_rss_mb']} MB"
    )
    print(
        f"  piped request via the daemon  {daemon['seconds']:.2f} s (decisions "
        f"{daemon['decisions_s']:.2f} s, ratio {daemon['seconds'] / daemon['decisions_s']:.2f}), "
        f"client peak {daemon['client_peak_rss_mb']} MB"
    )
    print(
        f"  llmos call fs.stat            in-process {f['call_in_process_s']:.2f} s, via the "
        f"daemon {f['call_daemon_s']:.2f} s; the round trip alone p50 "
        f"{f['call_round_trip_p50_ms']:.2f} ms"
    )
    print(
        f"  memory                        daemon {f['daemon_rss_mb']} MB after serving them all; "
        f"two in-process shells {2 * alone['peak_rss_mb']} MB"
    )
    together = f["together"]
    print(
        f"  two shells + llmos run at once: status {together['status']}, "
        f"{together['seconds']:.1f} s, memory shared: {together['memory_shared']}"
    )
