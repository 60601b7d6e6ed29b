"""`llmos doctor`: says what is there and what is missing, without loading the model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llmos.config import Settings
from llmos.doctor import doctor


def test_an_empty_home_is_told_to_pull_a_model(llmos_home: Path, tmp_path: Path) -> None:
    report = doctor(Settings(model=str(tmp_path / "none.gguf")))
    labels = dict(report.lines)
    assert labels["model"].startswith("none")
    assert any("llmos model pull" in m for m in report.missing)
    assert "not made yet" in labels["memory"]


def test_a_model_and_a_declared_mcp_server_are_described(
    llmos_home: Path, small_model: Path
) -> None:
    llmos_home.mkdir(parents=True, exist_ok=True)
    (llmos_home / "config.toml").write_text(
        '[mcp.servers.gone]\ncommand = ["no-such-program-here"]\n'
    )
    report = doctor(Settings(model=str(small_model)))
    labels = dict(report.lines)
    assert small_model.name in labels["model"] and "layers" in labels["model"]
    assert labels["layers run on"].startswith(("CPU", "GPU"))
    assert "no-such-program-here" in labels["mcp gone"]
    assert any("not on PATH" in m for m in report.missing)


def test_llmos_doctor_prints_and_fails_when_something_is_missing(
    llmos_home: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "LLMOS_HOME": str(llmos_home), "LLMOS_MODEL": str(tmp_path / "x.gguf")}
    done = subprocess.run(
        [sys.executable, "-m", "llmos", "doctor"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and "missing:" in done.stdout and "llama.cpp" in done.stdout
