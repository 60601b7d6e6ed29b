"""Search by meaning over a workspace's files, with the real embedder and a real index."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import time_ns
from types import SimpleNamespace

import pytest

from llmos.config import Settings
from llmos.errors import ErrorCode, LlmosError
from llmos.memory import files
from llmos.memory.embedder import Embedder
from llmos.memory.files import FileIndex, chunk_text, index_file_name
from llmos.security.workspace import Workspace
from llmos.syscalls.services import FileSearchResult

CABIN = """\
# Lake house notes

Keys are under the blue flowerpot by the back door.
The boiler switch is in the cellar, left of the stairs.
Turn the water main on before using any tap.

Kitchen
The oven runs hot: bake ten degrees lower than the recipe says.
Spare fuses are in the drawer under the kettle.
Bins go out on Thursday night; recycling every other week.

Internet
The wifi is called LakeHouse5G and its password is loon-song-1987.
The router sits in the attic; unplug it for ten seconds if it hangs.

Leaving
Close the shutters, empty the fridge, and leave the heating on frost setting.
Drop the keys back under the flowerpot.
"""
WIFI_LINE = 13
LOG_LINES = 120

RECIPE = """\
Pancakes for four
Mix 200 g flour, two eggs, 300 ml milk and a pinch of salt.
Rest the batter for half an hour, then fry in a hot buttered pan.
"""

TODO = """\
- renew the car insurance before March
- call the dentist about the crown
- send Anna the photos from the wedding
"""


def _age(path: Path, seconds: int = 3600) -> None:
    """Set a file's mtime in the past, as files not touched this minute have."""
    st = path.stat()
    past = st.st_mtime_ns - seconds * 1_000_000_000
    os.utime(path, ns=(past, past))


def _write(path: Path, text: str | bytes) -> Path:
    """Write a file and age it (so its stat is trusted by the next scan)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    _age(path)
    return path


def _log(lines: int) -> str:
    """A service log of routine lines."""
    kinds = [
        "INFO  http GET /api/items 200 in {n} ms",
        "DEBUG cache hit ratio {n}%",
        "INFO  worker {n} picked job from queue",
        "WARN  slow query on orders table took {n} ms",
    ]
    return "".join(
        f"2024-05-01T10:{i // 60 % 60:02d}:{i % 60:02d} {kinds[i % 4].format(n=i % 97)}\n"
        for i in range(lines)
    )


def _paths(result: FileSearchResult) -> list[str]:
    return [hit.path for hit in result.hits]


@pytest.fixture
def ws(workspace: Path) -> Iterator[Workspace]:
    """The test's workspace folder as a Workspace."""
    opened = Workspace(workspace)
    yield opened
    opened.close()


@pytest.fixture
def index(settings: Settings, ws: Workspace, embedder: Embedder) -> Iterator[FileIndex]:
    """The workspace's file index under the test's LLMOS_HOME, with the real embedder."""
    with FileIndex.open(settings, ws, embedder) as opened:
        yield opened


@pytest.fixture
def home_files(workspace: Path) -> Path:
    """A few personal notes and a service log in the workspace."""
    _write(workspace / "notes" / "cabin.md", CABIN)
    _write(workspace / "recipes" / "pancakes.txt", RECIPE)
    _write(workspace / "todo.txt", TODO)
    _write(workspace / "logs" / "service.log", _log(LOG_LINES))
    return workspace


def test_chunks_keep_line_numbers_and_follow_paragraphs() -> None:
    chunks = chunk_text(CABIN)
    lines = CABIN.split("\n")
    for chunk in chunks:
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.end_line - chunk.start_line < files.CHUNK_LINES
        assert chunk.text.strip() and lines[chunk.start_line - 1].strip()
    wifi = [c for c in chunks if c.start_line <= WIFI_LINE <= c.end_line]
    assert len(wifi) == 1 and wifi[0].text.startswith("Internet")


def test_a_long_line_is_cut_into_chunks_of_its_own() -> None:
    chunks = chunk_text("short\n" + "x" * (2 * files.CHUNK_CHARS + 5) + "\nafter\n")
    assert [(c.start_line, c.end_line, len(c.text)) for c in chunks] == [
        (1, 1, 5),
        (2, 2, files.CHUNK_CHARS),
        (2, 2, files.CHUNK_CHARS),
        (2, 2, 5),
        (3, 3, 5),
    ]


def test_a_question_in_other_words_finds_the_right_lines(
    index: FileIndex, home_files: Path
) -> None:
    result = index.search("how do I reach the cabin's network", k=3)
    best = result.hits[0]
    assert best.path == "notes/cabin.md"
    assert best.start_line <= WIFI_LINE <= best.end_line
    assert best.end_line - best.start_line < 5
    assert "loon-song-1987" in best.text
    assert best.score > 0 and 0 < best.similarity <= 1
    assert result.scan.files == 4 and result.scan.embedded == result.scan.chunks
    assert not result.scan.truncated


def test_a_rare_exact_word_is_found_by_the_word_ranking(index: FileIndex, home_files: Path) -> None:
    _write(home_files / "logs" / "older.log", _log(40) + "ERROR payment gateway E4711-XQ\n")
    hit = index.search("E4711-XQ", k=1).hits[0]
    assert hit.path == "logs/older.log"
    assert hit.start_line <= 41 <= hit.end_line


def test_an_unchanged_workspace_is_only_statted(index: FileIndex, home_files: Path) -> None:
    index.search("pancake batter")
    again = index.search("when do the bins go out")
    assert (again.scan.read, again.scan.embedded, again.scan.removed) == (0, 0, 0)
    assert again.hits[0].path == "notes/cabin.md"


def test_a_changed_file_is_reindexed_and_a_deleted_one_drops_out(
    index: FileIndex, home_files: Path
) -> None:
    index.search("pancakes")
    _write(home_files / "recipes" / "pancakes.txt", "Waffles need a hot iron and melted butter.\n")
    changed = index.search("what do I need to make waffles", k=1)
    assert changed.scan.read == 1 and changed.scan.embedded == 1
    assert changed.hits[0].path == "recipes/pancakes.txt"
    assert "Waffles" in changed.hits[0].text

    (home_files / "recipes" / "pancakes.txt").unlink()
    gone = index.search("what do I need to make waffles", k=10)
    assert gone.scan.removed == 1
    assert "recipes/pancakes.txt" not in _paths(gone)


def test_a_change_in_the_same_mtime_tick_is_still_seen(index: FileIndex, workspace: Path) -> None:
    note = workspace / "note.txt"
    note.write_text("The spare key is in the garage.\n")
    index.search("spare key")
    stamp = note.stat().st_mtime_ns
    note.write_text("The spare key is at Mia's house\n")
    os.utime(note, ns=(stamp, stamp))
    hit = index.search("where is the spare key", k=1).hits[0]
    assert "Mia" in hit.text


def test_appending_to_a_log_embeds_only_its_new_chunks(index: FileIndex, home_files: Path) -> None:
    first = index.search("slow queries")
    log = home_files / "logs" / "service.log"
    with log.open("a") as out:
        out.write("ERROR disk full on /var, writes refused\n")
    _age(log, 60)
    after = index.search("the disk ran out of space", k=1)
    assert after.scan.read == 1 and after.scan.embedded <= 2 < first.scan.embedded
    assert after.hits[0].path == "logs/service.log"
    assert after.hits[0].end_line == LOG_LINES + 1


def test_a_time_budget_leaves_files_for_the_next_search(index: FileIndex, home_files: Path) -> None:
    index.search("pancakes")
    _write(home_files / "recipes" / "pancakes.txt", "Waffles need a hot iron and melted butter.\n")
    _write(home_files / "notes" / "garden.md", "Water the tomatoes every evening in July.\n")
    hurried = index.search("pancake batter", k=1, budget_s=0)
    assert hurried.scan.read == 0 and hurried.scan.waiting == 2
    assert hurried.scan.truncated and "2 changed or new files wait" in hurried.scan.note
    assert "batter" in hurried.hits[0].text
    done = index.search("pancake batter", k=10)
    assert done.scan.read == 2 and done.scan.waiting == 0 and not done.scan.truncated
    assert all("batter" not in hit.text for hit in done.hits)


@pytest.mark.model  # the embedding model, through the system's memory or examples
def test_a_big_file_cut_short_by_the_budget_keeps_its_vectors_for_next_time(
    settings: Settings, ws: Workspace, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _log(200) + "ERROR disk full on /var, writes refused\n"
    _write(workspace / "service.log", text)
    clock = [0.0]
    monkeypatch.setattr(files, "time", SimpleNamespace(monotonic=lambda: clock[0], time_ns=time_ns))
    monkeypatch.setattr(files, "EMBED_GROUP", 4)
    slow = Embedder()
    embed = slow.embed

    def ten_seconds_a_batch(texts: Sequence[str]) -> list[list[float]]:
        clock[0] += 10
        return embed(texts)

    monkeypatch.setattr(slow, "embed", ten_seconds_a_batch)
    with FileIndex.open(settings, ws, slow) as index:
        scans = [index.search("the disk ran out of space", k=1, budget_s=15).scan]
        while scans[-1].waiting:
            assert scans[-1].embedded == 8 and not index.search("disk", budget_s=0).hits
            scans.append(index.search("the disk ran out of space", k=1, budget_s=15).scan)
        hit = index.search("the disk ran out of space", k=1).hits[0]
    assert sum(scan.embedded for scan in scans) == scans[-1].chunks == len(chunk_text(text))
    assert hit.path == "service.log" and hit.end_line == 201


def test_binary_and_non_utf8_files_are_skipped(index: FileIndex, workspace: Path) -> None:
    _write(workspace / "photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF wifi password router\x00\x01")
    _write(workspace / "latin1.txt", "caf\xe9 wifi password router".encode("latin-1"))
    _write(workspace / "plain.txt", "Nothing about networks here, just a shopping list.\n")
    result = index.search("wifi password router", k=10)
    assert _paths(result) == ["plain.txt"]
    assert result.scan.files == 1 and result.scan.skipped == 2
    assert index.search("wifi password router").scan.read == 0


def test_a_symlink_out_of_the_workspace_is_not_followed(
    index: FileIndex, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The bank PIN is 4921 and the vault code is 7734.\n")
    (workspace / "secret.txt").symlink_to(outside / "secret.txt")
    (workspace / "outside").symlink_to(outside, target_is_directory=True)
    _write(workspace / "plain.txt", "Remember to water the plants on Sunday.\n")
    result = index.search("what is the bank PIN", k=10)
    assert _paths(result) == ["plain.txt"]
    assert all("4921" not in hit.text for hit in result.hits)


def test_hidden_and_tool_folders_are_not_indexed(index: FileIndex, workspace: Path) -> None:
    for folder in (".git", ".venv", "node_modules", "src/__pycache__"):
        _write(workspace / folder / "notes.txt", "The wifi password is hunter2.\n")
    _write(workspace / ".env", "WIFI_PASSWORD=hunter2\n")
    _write(workspace / "src" / "main.py", "print('hello')\n")
    result = index.search("wifi password", k=10)
    assert _paths(result) == ["src/main.py"]


def test_a_file_vanishing_mid_scan_is_skipped(
    index: FileIndex, home_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = files._read_file

    def vanish_first(dir_fd: int, name: str) -> object:
        if name == "cabin.md":
            os.unlink(name, dir_fd=dir_fd)
        return real(dir_fd, name)

    monkeypatch.setattr(files, "_read_file", vanish_first)
    result = index.search("wifi password", k=10)
    assert "notes/cabin.md" not in _paths(result)
    assert result.scan.files == 3 and result.scan.skipped == 1


def test_a_search_within_a_folder_sees_only_that_folder(index: FileIndex, home_files: Path) -> None:
    result = index.search("wifi password", k=10, path="recipes")
    assert set(_paths(result)) == {"recipes/pancakes.txt"}
    assert result.scan.files == 1
    everything = index.search("wifi password", k=10)
    assert everything.scan.read == 3 and everything.hits[0].path == "notes/cabin.md"


def test_limits_cut_the_index_short_and_say_so(
    index: FileIndex, home_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "FILE_INDEX_MAX_FILE_BYTES", 2000)
    small = index.search("wifi password", k=10)
    assert "logs/service.log" not in _paths(small)
    assert small.scan.skipped == 1 and small.scan.files == 3 and not small.scan.truncated
    monkeypatch.undo()
    monkeypatch.setattr(files, "FILE_INDEX_MAX_FILES", 2)
    few = index.search("wifi password", k=10)
    assert few.scan.truncated and "2 files" in few.scan.note
    assert few.scan.files == 2 and few.scan.removed == 2
    assert set(_paths(few)) <= {"logs/service.log", "notes/cabin.md"}
    monkeypatch.setattr(files, "FILE_INDEX_MAX_FILES", 100)
    monkeypatch.setattr(files, "FILE_INDEX_MAX_CHUNKS", 3)
    capped = index.search("wifi password", k=10)
    assert capped.scan.truncated and "3 chunks" in capped.scan.note
    assert capped.scan.chunks <= 3


@pytest.mark.parametrize(
    ("query", "k", "path", "code"),
    [
        ("  ", 5, "", ErrorCode.E_INVAL),
        ("wifi", 0, "", ErrorCode.E_INVAL),
        ("wifi", files.FILE_SEARCH_MAX_K + 1, "", ErrorCode.E_INVAL),
        ("wifi", 5, "../", ErrorCode.E_PERM),
        ("wifi", 5, "/etc", ErrorCode.E_PERM),
        ("wifi", 5, "missing", ErrorCode.E_NOENT),
    ],
)
def test_bad_requests_fail_with_a_code(
    index: FileIndex, home_files: Path, query: str, k: int, path: str, code: ErrorCode
) -> None:
    with pytest.raises(LlmosError) as caught:
        index.search(query, k=k, path=path)
    assert caught.value.code == code


def test_the_index_outlives_its_instance_and_survives_damage(
    settings: Settings, ws: Workspace, embedder: Embedder, home_files: Path
) -> None:
    with FileIndex.open(settings, ws, embedder) as first:
        first.search("pancakes")
    with FileIndex.open(settings, ws, embedder) as second:
        assert second.search("pancakes").scan.embedded == 0
    database = settings.home / files.FILES_DIR / index_file_name(ws.root)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(b"this is not a database" * 100)
    with FileIndex.open(settings, ws, embedder) as rebuilt:
        result = rebuilt.search("how do I reach the cabin's network", k=1)
    assert result.scan.embedded == result.scan.chunks > 0
    assert result.hits[0].path == "notes/cabin.md"
