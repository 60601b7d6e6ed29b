"""`llmos bench priority`: the shell's decision latency on the default model while two apps keep
the model busy (each deciding request after request in the background), with the scheduler's
foreground priority and without it (every process equal), beside the shell alone."""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from llmos.config import Settings
from llmos.kernel.backend import open_backend
from llmos.kernel.loop import Conversation, Kernel
from llmos.kernel.scheduler import BACKGROUND, FOREGROUND, Scheduler
from llmos.system import System

SHELL = ("what files are here?", "what does notes.txt say?", "how many lines are in todo.md?")
APPS = ("summarise notes.txt", "list the markdown files", "what is in todo.md?")


def _decide(kernel: Kernel, system: System, ws: Path, request: str) -> float:
    """Seconds for the kernel's first decision on `request` (a fresh conversation)."""
    process = system.spawn("p", ws, patterns=["fs.*", "reply", "ask"])
    start = time.perf_counter()
    kernel.first_call(process, Conversation(), request)
    return time.perf_counter() - start


def bench_priority(settings: Settings, rounds: int = 3) -> dict[str, Any]:
    """Time the shell's decisions alone, then beside two busy apps with and without priority;
    prints and returns the p50s (s)."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llmos-bench-priority-") as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        (ws / "notes.txt").write_text("the train leaves at 9\nplatform 4\n")
        (ws / "todo.md").write_text("- buy milk\n- call Ana\n")
        home = Path(tmp) / "home"
        scratch = settings.model_copy(update={"home": home})
        backend = open_backend(settings)
        with System(scratch, plugins=False) as system, Scheduler(backend) as sched:
            shell = Kernel(system, sched.client("shell", priority=FOREGROUND))
            shell.warm()
            requests = [SHELL[i % len(SHELL)] for i in range(rounds * len(SHELL))]
            figures["alone_p50_s"] = statistics.median(
                _decide(shell, system, ws, r) for r in requests
            )
            for label, priority in (("with_priority", BACKGROUND), ("equal", FOREGROUND)):
                stop = threading.Event()
                done = [0, 0]

                def app(
                    index: int,
                    stop: threading.Event = stop,
                    priority: int = priority,
                    done: list[int] = done,
                ) -> None:
                    kernel = Kernel(system, sched.client(f"app{index}", priority=priority))
                    n = 0
                    while not stop.is_set():
                        _decide(kernel, system, ws, APPS[(index + n) % len(APPS)])
                        n += 1
                    done[index] = n

                apps = [threading.Thread(target=app, args=(i,)) for i in range(2)]
                for thread in apps:
                    thread.start()
                time.sleep(2.0)  # both apps on the model before the person asks
                samples = [_decide(shell, system, ws, r) for r in requests]
                stop.set()
                for thread in apps:
                    thread.join()
                figures[f"{label}_p50_s"] = statistics.median(samples)
                figures[f"{label}_app_decisions"] = sum(done)
    print(f"the shell's decision latency, p50 of {rounds * len(SHELL)} decisions (s):")
    print(f"  alone                               {figures['alone_p50_s']:.2f}")
    print(
        f"  beside two busy apps, with priority {figures['with_priority_p50_s']:.2f}"
        f"   (the apps decided {figures['with_priority_app_decisions']} times meanwhile)"
    )
    print(
        f"  beside two busy apps, all equal     {figures['equal_p50_s']:.2f}"
        f"   (the apps decided {figures['equal_app_decisions']} times meanwhile)"
    )
    return figures
