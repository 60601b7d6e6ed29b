"""Grounding: what the workspace really holds, read before each step, so the kernel can only
name paths that exist (or that the person named) where a call reads, and sees a short view of
the workspace with each request instead of guessing names."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from llmos.atomic import TEMP_MARK
from llmos.errors import LlmosError
from llmos.kernel.examples import is_question
from llmos.limits import GROUND_MAX_PATHS, GROUND_SCAN_ENTRIES, VIEW_MAX_CHARS, VIEW_MAX_ENTRIES
from llmos.security.workspace import Workspace, open_dir_at
from llmos.syscalls.base import Syscall, is_target

SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "venv"})
"""Folders never listed (besides hidden ones): tool caches, not the person's files."""

_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')
"""Names the grammar's literals would have to escape: rare, and left out rather than risked."""
_WORD = re.compile(r"[a-z0-9]+")
_PATHLIKE = re.compile(
    r"""(?:^|[\s"'`(\[,])((?:[~/.]|\w)[\w.~/@+-]*\.[\w]+|[\w.~@+-]*/[\w.~/@+-]*)"""
)


@dataclass(frozen=True)
class Entry:
    """One file or folder of the workspace (path relative to its root)."""

    path: str
    is_dir: bool
    size: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The workspace's files and folders at one moment, bounded; `complete` is False when the
    scan stopped at its limit (the workspace holds more than is listed)."""

    entries: tuple[Entry, ...] = ()
    complete: bool = True
    mentioned: tuple[str, ...] = field(default=())
    """Paths the request itself names (they may not exist: the call then fails E_NOENT or
    E_PERM, which is the honest answer)."""
    named: tuple[str, ...] = ()
    """Real paths the person's own words in the conversation name (the only ones a destroying
    call may take)."""
    bulk: bool = False
    """Whether the request asks about many files at once ("every", "all", "*.log")."""
    changes: bool = True
    """Whether the person's request asks for a change at all. When it does not ("what does
    about.md say?"), calls that change files are left out of the grammar for the turn, so an
    instruction planted in a file it reads has nothing to act with."""
    folders: tuple[str, ...] = ()
    """Bare words the request calls a folder ("the downloads folder", "list src"): offered
    where a folder is read, and a move or copy to one of them goes into it."""
    about_files: bool = True
    """Whether the request speaks of files or folders at all (or names one). In an empty
    workspace, calls that only look at files are offered only when it does: "hello" or
    "which train do I take?" has nothing there to look at."""
    about_memory: bool = True
    """Whether the request may be about what the person said or kept before (it asks
    something, speaks of the person, or of remembering): only then is memory searched."""
    numbers: bool = True
    """Whether the turn holds a digit so far (its request, a result, a recalled memory): only
    then is arithmetic offered. Set by the kernel as the turn goes (`Kernel.decide`)."""
    allows: frozenset[str] | None = None
    """The effects the turn's request may cause (`llmos.kernel.policy`); calls with another
    are left out of the grammar (the dispatcher refuses them anyway). None: no limit."""

    @property
    def key(self) -> tuple[object, ...]:
        """What the grammar depends on: the paths and the request's names, not sizes."""
        return (
            tuple((e.path, e.is_dir) for e in self.entries),
            self.mentioned,
            self.named,
            self.bulk,
            self.changes,
            self.folders,
            self.about_files,
            self.about_memory,
            self.numbers,
            self.allows,
        )

    def named_of(self, kind: str) -> list[str]:
        """The paths the person named that can be of `kind` (file, dir, any): a search scoped
        to a folder takes only a folder they named ("search the logs folder"), never one the
        model picked ("the wifi password for the cabin" searched logs/ and found nothing)."""
        if kind == "any":
            return list(self.named)
        dirs = {e.path for e in self.entries if e.is_dir}
        files = {e.path for e in self.entries if not e.is_dir}
        if kind == "dir":
            return [p for p in self.named if p in dirs or (p not in files and not has_extension(p))]
        return [p for p in self.named if p in files or (p not in dirs and not p.endswith("/"))]

    def files(self) -> list[str]:
        """Every listed file."""
        return [e.path for e in self.entries if not e.is_dir]

    def dirs(self) -> list[str]:
        """Every listed folder, the workspace root (".") first."""
        return [".", *(e.path for e in self.entries if e.is_dir)]

    def choices(
        self, kind: str, limit: int = GROUND_MAX_PATHS, real_only: bool = False
    ) -> list[str]:
        """The paths a grounded argument of `kind` (file, dir, any) may name: real ones of that
        kind (at most `limit`), then the ones the request names that could be of that kind (a
        name with a file extension is no folder, "old/" no file; a folder word only where a
        folder is looked in, never as a source to move); with `real_only`, only the real
        ones."""
        real = self.files() if kind == "file" else self.dirs() if kind == "dir" else None
        if real is None:
            real = [*self.dirs(), *self.files()]
        named: list[str] = []
        if not real_only:
            if kind != "dir":
                named += [m for m in self.mentioned if not m.endswith("/")]
            if kind != "file":
                named += [m for m in self.mentioned if not has_extension(m)]
            if kind == "dir":
                named += self.folders
        return list(dict.fromkeys([*real[:limit], *named]))

    @property
    def folder_talk(self) -> bool:
        """Whether the request speaks of a folder: a folder word, a path ending in "/", or a
        named path with no file extension ("create docs/2024")."""
        return bool(self.folders) or any(
            m.endswith("/") or not has_extension(m) for m in self.mentioned
        )


def scan(
    workspace: Workspace, request: str = "", changes: bool | None = None, said: str = ""
) -> Snapshot:
    """The workspace's files and folders (hidden and cache folders left out), at most
    GROUND_SCAN_ENTRIES looked at; when there are more than GROUND_MAX_PATHS, the ones whose
    names share most words with `request` come first, then the shallowest. `changes` says
    whether the turn may change files (by default: whether the request asks for a change);
    `said` is everything the person said in the conversation (default: the request), which
    decides the paths they named."""
    found: list[Entry] = []
    complete = True
    mentioned = tuple(mentioned_paths(request))
    folders = tuple(
        f for f in folder_words(request) if f not in mentioned and f + "/" not in mentioned
    )
    about = bool(mentioned or folders or FILE_WORDS.search(request))
    recall = is_question(request) or bool(RECALL_WORDS.search(request))
    bulk = bool(BULK_WORDS.search(request))
    if changes is None:
        changes = asks_for_change(request)
    try:
        with workspace.locate(".") as loc:
            fd = open_dir_at(loc.dir_fd, loc.name)
    except (OSError, LlmosError):  # an unreadable workspace grounds nothing, never fails a turn
        return Snapshot(
            mentioned=mentioned,
            bulk=bulk,
            changes=changes,
            folders=folders,
            about_files=about,
            about_memory=recall,
        )
    hidden = workspace.hidden
    try:
        for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            base = "" if dirpath == "." else dirpath[2:] + "/"
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and d not in SKIPPED_DIRS and base + d not in hidden
            )
            for name in sorted(dirnames + filenames):
                if name.startswith(".") or TEMP_MARK in name or _UNSAFE.search(name):
                    continue
                if base + name in hidden:
                    continue
                try:
                    info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(info.st_mode)
                if not is_dir and not stat.S_ISREG(info.st_mode):
                    continue
                found.append(Entry(base + name, is_dir, 0 if is_dir else info.st_size))
                if len(found) >= GROUND_SCAN_ENTRIES:
                    complete = False
                    break
            if not complete:
                break
    finally:
        os.close(fd)
    if len(found) > GROUND_MAX_PATHS:
        complete = False
        found = _nearest(found, request)[:GROUND_MAX_PATHS]
    found.sort(key=lambda e: e.path.split("/"))
    if about and not found and not mentioned and not folders and is_question(request):
        # With no file at all, a question's verb ("When did Gina open her store?", "What
        # did she find?") does not make it about files; a file noun still does.
        about = bool(FILE_NOUNS.search(request))
    if not changes:
        real = {e.path for e in found}
        changes = any(m.strip("/").removeprefix("./") not in real for m in mentioned)
    named = tuple(
        dict.fromkeys([*(e.path for e in found if names(said or request, e)), *mentioned])
    )
    return Snapshot(tuple(found), complete, mentioned, named, bulk, changes, folders, about, recall)


BULK_WORDS = re.compile(
    r"\b(?:all|every|each|any|both|them|these|those|everything|files|photos|images|pictures|"
    r"pics|logs|documents|docs|ones)\b|\*",
    re.IGNORECASE,
)
"""Words with which a request asks about many files at once: only then may a call that takes a
pattern be given one (a small model otherwise writes a made-up glob, "tmp/*", for "it")."""

RECALL_WORDS = re.compile(
    r"\b(?:my|mine|i|i'm|i've|i'd|we|our|remember\w*|remind\w*|recall\w*|told|said|"
    r"mention\w*|know|memor\w*|find|look\w*|search\w*|check|what|who|whose|when|where|which|"
    r"why|how)\b",
    re.IGNORECASE,
)
"""Words of a request that may be about what the person said or kept before."""

_FILE_NOUNS = (
    r"files?|folders?|director(?:y|ies)|dirs?|workspace|documents?|docs?|photos?|images?|"
    r"pictures?|pics?|logs?|readme|contents?|csv|txt|pdf|spreadsheets?"
)
FILE_NOUNS = re.compile(rf"\b(?:{_FILE_NOUNS})\b", re.IGNORECASE)
"""Nouns with which a request speaks of files or folders."""
FILE_WORDS = re.compile(
    rf"\b(?:{_FILE_NOUNS}|here|list|ls|search\w*|grep|find|open|read|print|show)\b",
    re.IGNORECASE,
)
"""Words with which a request speaks of files or folders (besides naming one): the nouns, and
verbs that do something to files. A question in an empty workspace needs a noun."""

_FOLDER = r"(?:folder|directory|dir)"
_FOLDER_NAMES = (
    re.compile(rf"""(?:^|[\s"'`(])["'`]?(\w[\w.-]*)["'`]?\s+{_FOLDER}\b""", re.IGNORECASE),
    re.compile(rf"""\b{_FOLDER}\s+(?:called\s+|named\s+)?["'`]?(\w[\w.-]*)""", re.IGNORECASE),
    re.compile(r"""\b(?:list|ls)\s+(?:the\s+|my\s+)?["'`]?(\w[\w.-]*)""", re.IGNORECASE),
    re.compile(r"""\bmkdir\s+(?:-p\s+)?["'`]?(\w[\w.-]*)""", re.IGNORECASE),
)
_NOT_A_FOLDER = frozenset(
    re.findall(
        r"\w+",
        "a an the this that these those my your our his her its their which what whose each every "
        "any some all one new same other current parent root whole top main own empty first last "
        "and or of in into to from for with on at by as is are it them everything files file "
        "folders folder directory directories dirs dir contents content here there called named "
        "me us you has have had holds hold contains contain should will would can could is was "
        "do does did get gets so then but if",
    )
)


def folder_words(request: str) -> list[str]:
    """Bare words a request calls a folder: "the downloads folder", "folder called backups",
    "list src" (articles, pronouns and words like "new" or "files" left out)."""
    out: list[str] = []
    for pattern in _FOLDER_NAMES:
        for match in pattern.finditer(request):
            word = match.group(1).rstrip(".,;:!?")
            if word.lower() not in _NOT_A_FOLDER and not _UNSAFE.search(word) and word not in out:
                out.append(word)
    return out


def has_extension(path: str) -> bool:
    """Whether a path's last part ends in a file extension ("notes.txt", "a/b.tar.gz")."""
    return bool(
        re.search(r"\.[A-Za-z0-9]{1,8}$", path.rstrip("/").rpartition("/")[2])
    ) and not path.endswith("/")


def names(said: str, entry: Entry) -> bool:
    """Whether the person's words name `entry`: its path, or its file name as a word of
    its own (so "delete notes.txt" names docs/notes.txt, and "remove the backup" names no
    backup-jan.zip)."""
    text = said.lower()
    for name in {entry.path.lower(), entry.path.rpartition("/")[2].lower()}:
        if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", text):
            return True
    return False


def _nearest(entries: list[Entry], request: str) -> list[Entry]:
    """Entries ordered by how many of the request's words their path holds, then depth."""
    words = set(_WORD.findall(request.lower()))

    def key(entry: Entry) -> tuple[int, int, str]:
        shared = len(words & set(_WORD.findall(entry.path.lower())))
        return (-shared, entry.path.count("/"), entry.path)

    return sorted(entries, key=key)


def mentioned_paths(request: str) -> list[str]:
    """Path-like words of a request (`notes.txt`, `docs/a.md`, `/etc/hostname`, `old/`), as
    written, trailing punctuation dropped."""
    out: list[str] = []
    for match in _PATHLIKE.finditer(request):
        word = match.group(1).rstrip(".,;:!?)")
        plausible = word and len(word) <= 200 and not word.startswith("http")
        if plausible and word not in out and not _UNSAFE.search(word):
            out.append(word)
    return out


CHANGE_WORDS = re.compile(
    r"\b(?:(?:writ|wrote|sav|creat|mak|made|cop(?:y|ie)|duplicat|mov|renam|delet|remov|eras|"
    r"trash|chuck|discard|wip|clean|tid(?:y|ie)|append|prepend|insert|edit|replac|fix|correct|"
    r"chang|updat|overwrit|rewrit|convert|resiz|shrink|scal|crop|rotat|flip|thumbnail|"
    r"compress|organi[sz]|arrang|archiv|zip|unzip|mkdir|touch|fill|combin|merg|split|"
    r"export|generat|produc|draft|compos|undo|restor|revert|execut|install|send|swap|trim|"
    r"strip|uppercas|lowercas|capitali[sz]|forget|forgot|purg|get rid|back(?:ed|ing)? up|"
    r"note down|jot|turn\w* \S+ into)\w{0,4}|add|adds|added|put|puts|set|sets|bin|cut|"
    r"new|start|run|tag|sort|clear|empty|join|paste|save)\b",
    re.IGNORECASE,
)
"""Words with which people ask for a change. Read only from the person's request (file names
left out), never from a file; generous on purpose: missing one costs a turn that cannot
write, while a question ("what does about.md say?", "summarise README.md") gets none."""


def asks_for_change(request: str) -> bool:
    """Whether a request uses a word of change (its file names left out, so "backup.zip" or
    "new.txt" do not count). A path it names that does not exist yet counts too; `scan`
    checks that against the workspace."""
    words = request
    for path in mentioned_paths(request):
        words = words.replace(path, " ")
    return bool(CHANGE_WORDS.search(words))


def view(snapshot: Snapshot, max_entries: int = VIEW_MAX_ENTRIES) -> str:
    """A short listing of the workspace for the prompt: top-level files, then each folder with
    the names inside it, within VIEW_MAX_CHARS; '...' where it was cut."""
    if not snapshot.entries:
        return "WORKSPACE: (empty)"
    children: dict[str, list[Entry]] = {}
    for entry in snapshot.entries:
        parent = entry.path.rpartition("/")[0]
        children.setdefault(parent, []).append(entry)
    parts: list[str] = []
    shown = 0

    def walk(folder: str) -> None:
        nonlocal shown
        for entry in children.get(folder, []):
            if shown >= max_entries:
                return
            shown += 1
            if entry.is_dir:
                inner = children.get(entry.path, [])
                parts.append(f"{entry.path}/" + ("" if inner else " (empty)"))
                walk(entry.path)
            else:
                parts.append(entry.path)

    walk("")
    text = ", ".join(parts)
    cut = shown < len(snapshot.entries) or not snapshot.complete
    if len(text) > VIEW_MAX_CHARS:
        text = text[:VIEW_MAX_CHARS].rsplit(", ", 1)[0]
        cut = True
    return f"WORKSPACE: {text}" + (", ..." if cut else "")


def into_folders(call: Syscall, snapshot: Snapshot) -> Syscall:
    """`call` with each move or copy target the request called a folder ("into the done
    folder") written as one ("done/"), unless a file already has that name: a small model
    writes "done", and a missing "done" would make the move a rename."""
    files = set(snapshot.files())
    update = {}
    for name, info in type(call).model_fields.items():
        value = getattr(call, name)
        if not is_target(info) or not isinstance(value, str) or value.endswith("/"):
            continue
        bare = value.removeprefix("./")
        if bare in snapshot.folders and bare not in files:
            update[name] = bare + "/"
    return call.model_copy(update=update) if update else call
