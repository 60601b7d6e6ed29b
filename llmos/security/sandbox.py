"""The walls around a command tool on Linux: Landlock (files, TCP, signals, abstract sockets) and
a small seccomp filter (no new session, no socket without network), a trimmed environment, a
private temp folder and resource limits, applied in the child between fork and exec.

Why in the child through `preexec_fn` and not a `python -m ... -- argv` wrapper: everything that
can fail or allocate (opening the granted paths, building the Landlock ruleset, the seccomp
program) is done here in the parent, before the fork; the child only makes five system calls on
prepared memory (setrlimit, prctl, landlock_restrict_self, prctl seccomp) and imports, logs or
locks nothing, which is what makes `preexec_fn` unsafe with threads. A wrapper would cost a
second interpreter start-up (about 20 ms here) on every tool run for the same walls.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import platform
import resource
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from llmos.errors import ErrorCode, LlmosError

SANDBOX_MEMORY_BYTES = 4 * 1024**3
"""Address space of a sandboxed command (RLIMIT_AS); large enough for compilers and Python."""
SANDBOX_OPEN_FILES = 256
"""Open descriptors of a sandboxed command (RLIMIT_NOFILE)."""
SANDBOX_FILE_BYTES = 1024**3
"""Largest file a sandboxed command may write (RLIMIT_FSIZE), so one tool cannot fill the disk."""
SANDBOX_CPU_GRACE_S = 1
"""CPU seconds a command gets beyond its wall-clock time-out (RLIMIT_CPU) before SIGXCPU."""

SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
"""The system's read-only folders: programs, libraries, their configuration."""
PROC_READ = ("/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/version")
"""Of /proc, only these and the command's own /proc/PID (granted in the child). Not /proc as a
whole: measured on Linux 6.18, a sandboxed command could read its parent's /proc/PID/environ
(llmos's environment, tokens included) despite Landlock's ptrace scoping."""
DEVICES_READ = ("/dev/zero", "/dev/random", "/dev/urandom", *PROC_READ)
DEVICES_WRITE = ("/dev/null", "/dev/full")

# Landlock ABI (include/uapi/linux/landlock.h). The syscall numbers are the same on every arch.
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 16, 32, 64, 128
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 256, 512, 1024, 2048
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 4096, 8192, 16384, 32768
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
"""The only rights a rule on a file (not a folder) may carry."""

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (not Linux, not built in, or
    not enabled in `lsm=`). Tests monkeypatch it to simulate a kernel without Landlock."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    return max(0, int(version))


def _fs_rights(abi: int) -> int:
    """Every file-system right this ABI knows (all handled, so none is left open by default)."""
    rights = (FS_MAKE_SYM << 1) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


# seccomp: (audit arch, setsid, setpgid, socket, io_uring_setup) per machine.
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, 112, 109, 41, 425),
    "aarch64": (0xC00000B7, 157, 154, 198, 425),
}
_BPF_LD_ABS, _BPF_JEQ, _BPF_JGE, _BPF_RET = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_X32_SYSCALL_BIT = 0x40000000


def seccomp_available() -> bool:
    """Whether this machine gets the seccomp filter (x86_64 and aarch64 Linux)."""
    return sys.platform.startswith("linux") and platform.machine() in _SECCOMP_ARCH


def _seccomp_program(network: bool) -> list[tuple[int, int, int, int]]:
    """A classic BPF program: setsid and setpgid fail (a tool's children stay in its process
    group, so killing the group kills them all), io_uring fails (it could open sockets past
    this filter), and without network `socket()` fails for every family (UDP and Unix sockets
    too, which Landlock does not cover). Any other arch or x32 call fails with ENOSYS."""
    arch, setsid, setpgid, socket, io_uring = _SECCOMP_ARCH[platform.machine()]
    eperm, eacces, enosys = (_RET_ERRNO | e for e in (errno.EPERM, errno.EACCES, errno.ENOSYS))
    denied = [(setsid, eperm), (setpgid, eperm), (io_uring, enosys)]
    if not network:
        denied.append((socket, eacces))
    program = [
        (_BPF_LD_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ, 1, 0, arch),
        (_BPF_RET, 0, 0, enosys),
        (_BPF_LD_ABS, 0, 0, 0),  # seccomp_data.nr
        (_BPF_JGE, 0, 1, _X32_SYSCALL_BIT),
        (_BPF_RET, 0, 0, enosys),
    ]
    for number, answer in denied:
        program += [(_BPF_JEQ, 0, 1, number), (_BPF_RET, 0, 0, answer)]
    program.append((_BPF_RET, 0, 0, _RET_ALLOW))
    return program


def _open_path(path: str) -> tuple[int, bool] | None:
    """An O_PATH handle on `path` (not following a final symlink) and whether it is a folder;
    None for a path that does not exist or is a symlink (its target is granted or not on its
    own: Landlock judges where a path really leads)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    mode = os.fstat(fd).st_mode
    if stat.S_ISLNK(mode):
        os.close(fd)
        return None
    return fd, stat.S_ISDIR(mode)


class Sandbox:
    """One sandboxed run being prepared: the ruleset and filter built, the private temp folder
    made; `enter` (the child's `preexec_fn`) applies them, `close` removes the temp folder.

    `workspace` is read, written and executed; `hidden` (workspace-relative) paths inside it are
    left out by granting their siblings one by one, since Landlock can only add, never subtract:
    the folders on the way to a hidden path can then be listed and created in by no one.
    `landlock` False runs without walls (a manifest's `sandbox = false`): the environment is
    still trimmed and the limits still apply. `workspace` None grants no workspace at all (the
    document converter, which gets its input on stdin); `read` adds folders readable only
    (the llmos package itself, for a Python child run from a source checkout).
    """

    def __init__(
        self,
        workspace: Path | None,
        *,
        hidden: Iterable[str] = (),
        read: Iterable[str] = (),
        program: str | None = None,
        network: bool = False,
        timeout: float = 30.0,
        landlock: bool = True,
        memory: int = SANDBOX_MEMORY_BYTES,
    ) -> None:
        self.workspace = None if workspace is None else Path(os.path.realpath(workspace))
        self.read = [os.path.realpath(path) for path in read]
        self.network = network
        self.landlock = landlock
        self.cpu_seconds = math.ceil(timeout) + SANDBOX_CPU_GRACE_S
        self.temp = Path(tempfile.mkdtemp(prefix="llmos-tool-"))
        self.env = {
            "PATH": os.environ.get("PATH") or os.defpath,
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "TMPDIR": str(self.temp),
            "HOME": str(self.temp) if landlock else os.environ.get("HOME", str(self.temp)),
        }
        """The command's whole environment: nothing of llmos's (no tokens, no keys) leaks."""
        self._limits = _limits(self.cpu_seconds, memory)
        self._ruleset = -1
        self._own_proc = _PathBeneathAttr(allowed_access=FS_READ_FILE | FS_READ_DIR)
        self._own_proc_ref = ctypes.byref(self._own_proc)
        self._abi = 0
        self._fprog: _SockFprog | None = None
        self._filter: ctypes.Array[_SockFilter] | None = None
        if not landlock:
            return
        try:
            self._abi = landlock_abi()
            if self._abi < 1:
                raise LlmosError(
                    ErrorCode.E_NOSYS,
                    "this kernel has no Landlock (Linux >= 5.13 with landlock in its lsm= list), "
                    "so a command tool cannot be sandboxed",
                )
            self._ruleset = self._build_ruleset(sorted(set(hidden)), program)
            if seccomp_available():
                program_rows = _seccomp_program(network)
                self._filter = (_SockFilter * len(program_rows))(
                    *[_SockFilter(*row) for row in program_rows]
                )
                self._fprog = _SockFprog(len(program_rows), self._filter)
        except BaseException:
            self.close()
            raise

    @property
    def abi(self) -> int:
        """The Landlock ABI the walls were built for (0 without walls)."""
        return self._abi

    def _build_ruleset(self, hidden: list[str], program: str | None) -> int:
        """The Landlock ruleset: everything handled, then the few grants added."""
        abi = self._abi
        every = _fs_rights(abi)
        attr = _RulesetAttr(handled_access_fs=every)
        size = 8
        if abi >= 4:
            size = 16
            if not self.network:
                attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        if abi >= 6:
            size = 24
            attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        fd = int(_syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
        if fd < 0:
            raise _os_failure("landlock_create_ruleset")
        try:
            read = FS_READ_FILE | FS_READ_DIR | FS_EXECUTE
            write = every & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_IOCTL_DEV)
            for path in (*SYSTEM_READ, *self._installations(program), *self.read):
                self._grant(fd, path, read)
            for path in DEVICES_READ:
                self._grant(fd, path, FS_READ_FILE)
            for path in DEVICES_WRITE:
                self._grant(fd, path, FS_READ_FILE | FS_WRITE_FILE | (every & FS_TRUNCATE))
            if program is not None:
                self._grant(fd, os.path.realpath(program), FS_READ_FILE | FS_EXECUTE)
            self._grant(fd, str(self.temp), write)
            if self.workspace is not None:
                self._grant_workspace(fd, self.workspace, hidden, write)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _installations(self, program: str | None) -> list[str]:
        """Read-only installations outside the system folders that a Python tool needs to
        start: the Python llmos runs on (pyenv, a home-built one) and the virtual environment
        the program belongs to (Python refuses to start when it sees a pyvenv.cfg it cannot
        read). Never the home itself or a folder holding the workspace or the temp folder."""
        found = [os.path.realpath(sys.base_prefix)]
        if program is not None:
            venv = Path(os.path.abspath(program)).parent.parent
            if (venv / "pyvenv.cfg").is_file():
                found.append(os.path.realpath(venv))
        home = os.path.realpath(os.path.expanduser("~"))
        kept = []
        for prefix in found:
            if any(prefix == p or prefix.startswith(p + "/") for p in SYSTEM_READ):
                continue
            holds = (home, str(self.workspace or self.temp), str(self.temp))
            if not any(inner == prefix or inner.startswith(prefix + "/") for inner in holds):
                kept.append(prefix)
        return kept

    def _grant_workspace(self, fd: int, root: Path, hidden: list[str], rights: int) -> None:
        """All of the workspace, less the hidden paths: the folders on the way to one get no
        rule, each of their other entries gets its own."""
        if not hidden:
            self._grant(fd, str(root), rights)
            return
        on_the_way = {""}
        for rel in hidden:
            parts = rel.split("/")
            on_the_way.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for folder in sorted(on_the_way):
            base = root / folder if folder else root
            with os.scandir(base) as entries:
                for entry in entries:
                    rel = f"{folder}/{entry.name}" if folder else entry.name
                    if rel in hidden or rel in on_the_way:
                        continue
                    self._grant(fd, entry.path, rights)

    @staticmethod
    def _grant(ruleset: int, path: str, rights: int) -> None:
        """Add a path-beneath rule (file rights only, for a file); a missing path is skipped."""
        opened = _open_path(path)
        if opened is None:
            return
        handle, is_dir = opened
        try:
            rule = _PathBeneathAttr(allowed_access=rights if is_dir else rights & FILE_RIGHTS)
            rule.parent_fd = handle
            if _syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
                raise _os_failure(f"landlock_add_rule({path})")
        finally:
            os.close(handle)

    def enter(self) -> None:
        """In the child, between fork and exec: limits, then no new privileges, then the walls.
        Nothing here allocates, imports or locks; a failure raises, so the command never runs
        outside its walls (subprocess reports it to the parent)."""
        for which, limit in self._limits:
            resource.setrlimit(which, limit)
        if not self.landlock:
            return
        if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        own = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._own_proc.parent_fd = own
        added = _syscall(SYS_ADD_RULE, self._ruleset, RULE_PATH_BENEATH, self._own_proc_ref, 0)
        os.close(own)
        if added != 0:
            raise OSError(ctypes.get_errno(), "landlock_add_rule(/proc/self)")
        if _syscall(SYS_RESTRICT_SELF, self._ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
        if self._fprog is not None:
            address = ctypes.addressof(self._fprog)
            if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, address, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")

    def close(self) -> None:
        """Release the ruleset and remove the private temp folder with what the tool left."""
        if self._ruleset >= 0:
            os.close(self._ruleset)
            self._ruleset = -1
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _limits(cpu_seconds: int, memory: int) -> list[tuple[int, tuple[int, int]]]:
    """The rlimits a command gets, each capped by the hard limit llmos itself runs under (a
    process cannot raise its own hard limit)."""
    wanted = [
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_NOFILE, SANDBOX_OPEN_FILES, SANDBOX_OPEN_FILES),
        (resource.RLIMIT_FSIZE, SANDBOX_FILE_BYTES, SANDBOX_FILE_BYTES),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    limits = []
    for which, soft, hard in wanted:
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        limits.append((which, (soft, hard)))
    return limits


def _os_failure(what: str) -> LlmosError:
    """A Landlock call that failed while the walls were being built, as E_INTERNAL."""
    code = ctypes.get_errno()
    return LlmosError(ErrorCode.E_INTERNAL, f"{what} failed: {os.strerror(code)}")


def coverage(abi: int) -> str:
    """What the walls cover on this kernel, in words (for `llmos bench sandbox` and errors)."""
    if abi < 1:
        return "no Landlock: command tools refuse to run unless their manifest says sandbox = false"
    parts = [f"Landlock ABI {abi}: files"]
    parts.append("TCP bind/connect" if abi >= 4 else "no TCP rules (ABI < 4)")
    parts.append("signals and abstract sockets scoped" if abi >= 6 else "signals not scoped")
    if seccomp_available():
        parts.append("seccomp: no socket() without network, no setsid/setpgid, no io_uring")
    else:
        parts.append(f"no seccomp filter on {platform.machine()}: UDP and new sessions uncovered")
    return "; ".join(parts)
