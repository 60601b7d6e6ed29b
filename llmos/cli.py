"""The `llmos` command: the shell, `call`, `run`, `serve`, `mcp`, `doctor`, `syscalls`,
`audit verify`, `bench`, `model`, `eval`, `learn`, `tidy`, `mem`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.errors import EXIT_STATUS, ErrorCode, LlmosError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from llmos.apps.manifest import CapabilityNeed, Manifest
    from llmos.client import Connection
    from llmos.config import Settings
    from llmos.kernel.backend import Backend
    from llmos.system import System


def _settings(args: argparse.Namespace) -> Settings:
    from llmos.config import Settings

    if getattr(args, "model", None):
        return Settings(model=args.model)
    return Settings()


def _workspace(args: argparse.Namespace) -> Path:
    return Path(args.workspace or os.getcwd())


def _daemon(args: argparse.Namespace) -> Connection | None:
    """A connection to the `llmos serve` of this LLMOS_HOME, when one runs (and no --model
    asked for another model than the daemon's)."""
    from llmos.client import connect, home_of_env

    if getattr(args, "model", None) or os.environ.get("LLMOS_NO_DAEMON"):
        return None
    return connect(home_of_env())


def cmd_shell(args: argparse.Namespace) -> int:
    """Open the shell (direct-call mode without a model); through `llmos serve` when one
    runs."""
    conn = None if args.direct else _daemon(args)
    if conn is not None:
        from llmos.client import home_of_env, run_piped_remote, run_terminal_remote

        try:
            if sys.stdin.isatty() and sys.stdout.isatty():
                history = home_of_env() / "history"
                return run_terminal_remote(conn, _workspace(args), args.resume, history)
            return run_piped_remote(conn, _workspace(args), args.resume)
        finally:
            conn.close()
    from llmos.kernel.backend import open_backend
    from llmos.kernel.models import resolve_model
    from llmos.shell.model import LazyKernel
    from llmos.shell.terminal import run_shell
    from llmos.system import System

    settings = _settings(args)
    with System(settings) as system:
        kernel = None
        if not args.direct:
            try:
                if not settings.server:
                    resolve_model(settings.model, settings.ensure_home())
            except LlmosError as exc:
                print(f"{exc.message}; starting in direct-call mode", file=sys.stderr)
            else:
                kernel = LazyKernel(system, lambda: open_backend(settings))
        try:
            return run_shell(system, _workspace(args), kernel, resume=args.resume)
        finally:
            if kernel is not None:
                kernel.close()


def cmd_call(args: argparse.Namespace) -> int:
    """Run one syscall through the dispatch path and print its result."""
    from llmos.shell.grants import terminal_grant
    from llmos.syscalls.cmdline import parse_line, parse_words
    from llmos.system import System

    settings = _settings(args)
    try:
        raw = parse_line(args.json) if args.json else parse_words(args.words)
    except LlmosError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_STATUS[exc.code]
    conn = _daemon(args)
    if conn is not None:
        from llmos.client import call_remote

        try:
            done = call_remote(conn, _workspace(args), raw, list(args.allow))
        finally:
            conn.close()
        return _show_remote(done, args.output_json)
    grant = terminal_grant if sys.stdin.isatty() and not os.environ.get("CI") else None
    with System(settings) as system:
        patterns = [*settings.default_caps, *args.allow]
        process = system.spawn("call", _workspace(args), patterns=patterns, grant=grant)
        result = system.dispatch(process, raw)
    if args.output_json:
        print(result.model_dump_json())
    elif result.ok:
        print(result.render())
    else:
        print(result.render(), file=sys.stderr)
    return 0 if result.ok else EXIT_STATUS[result.code or ErrorCode.E_INTERNAL]


def _show_remote(done: dict[str, Any], as_json: bool) -> int:
    """Print a result the daemon sent as `llmos call` prints its own; the exit status."""
    from llmos.syscalls.base import SyscallResult

    if "error" in done:
        print(done["error"], file=sys.stderr)
        return 1
    result = SyscallResult.model_validate(done)
    if as_json:
        print(result.model_dump_json())
    elif result.ok:
        print(result.render())
    else:
        print(result.render(), file=sys.stderr)
    return 0 if result.ok else EXIT_STATUS[result.code or ErrorCode.E_INTERNAL]


def _daemon_running(args: argparse.Namespace) -> bool:
    """Whether `llmos serve` runs for this home (and may be used)."""
    conn = _daemon(args)
    if conn is None:
        return False
    conn.close()
    return True


def _run_remote(sources: list[Path], workspace: Path, inputs: dict[str, str], yes: bool) -> int:
    """`llmos run` through the daemon: each manifest on a connection of its own, all at once
    (their completions share the daemon's scheduler); lines prefixed with the app's file name
    when there are several; the status of the first that failed."""
    from llmos.client import connect, home_of_env, run_remote

    lock = threading.Lock()
    outcomes: list[dict[str, Any]] = [{} for _ in sources]

    def one(index: int, source: Path) -> None:
        def show(text: str) -> None:
            with lock:
                for line in text.splitlines() or [""]:
                    print(f"{source.stem}: {line}" if len(sources) > 1 else line, flush=True)

        conn = connect(home_of_env())
        if conn is None:
            outcomes[index] = {"ok": False, "code": "E_IO", "message": "the daemon went away"}
            return
        try:
            outcomes[index] = run_remote(conn, source, workspace, inputs, yes, show)
        except ConnectionError as exc:
            outcomes[index] = {"ok": False, "code": "E_IO", "message": str(exc)}
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = 0
    for source, done in zip(sources, outcomes, strict=True):
        if done.get("ok"):
            continue
        code = ErrorCode(done.get("code") or "E_INTERNAL")
        prefix = f"{source.stem}: " if len(sources) > 1 else ""
        print(f"{prefix}{code}: {done.get('message', '')}", file=sys.stderr)
        status = status or EXIT_STATUS[code]
    return status


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the resident daemon of this LLMOS_HOME (see llmos.serve), or stop it."""
    from llmos.serve import Daemon, stop

    settings = _settings(args)
    if args.stop:
        print(stop(settings.ensure_home()))
        return 0
    try:
        return Daemon(settings).run(
            ready=lambda: print(f"llmos serve: listening on {settings.home}/serve.sock", flush=True)
        )
    except LlmosError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_STATUS[exc.code]


def _approver(yes: bool) -> Callable[[Manifest, list[CapabilityNeed]], bool | None]:
    """How `llmos run` approves an app's new capabilities: --yes, else a terminal prompt, else
    nobody (the run is refused with E_PERM)."""

    def approve(manifest: Manifest, needs: list[CapabilityNeed]) -> bool | None:
        if yes:
            return True
        if not sys.stdin.isatty() or os.environ.get("CI"):
            return None
        listed = "\n".join(f"  - {n.describe()}" for n in needs)
        sys.stderr.write(f"App {manifest.name} asks for:\n{listed}\nApprove (remembered)? [y/N] ")
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return approve


def cmd_run(args: argparse.Namespace) -> int:
    """Run app manifests non-interactively (several at once, through one model); the exit
    status tells success from failure."""
    from llmos.apps.manifest import load_manifest, run_app
    from llmos.kernel.backend import open_backend
    from llmos.system import System

    inputs: dict[str, str] = {}
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"E_INVAL: --input {item!r}: expected KEY=VALUE", file=sys.stderr)
            return EXIT_STATUS[ErrorCode.E_INVAL]
        inputs[key] = value
    sources = [Path(m) for m in args.manifest]
    if _daemon_running(args):
        return _run_remote(sources, _workspace(args), inputs, args.yes)
    manifests = [load_manifest(source) for source in sources]
    settings = _settings(args)
    with System(settings) as system:
        for label, why in system.plugins.failed.items():
            print(f"plugin {label} skipped: {why}", file=sys.stderr)
        if len(manifests) > 1:
            return _run_several(
                system, list(zip(manifests, sources, strict=True)), _workspace(args), inputs, args
            )
        run = run_app(
            system,
            manifests[0],
            sources[0],
            _workspace(args),
            inputs,
            approve=_approver(args.yes),
            backend=lambda: open_backend(settings),
        )
    if run.ok:
        return 0
    print(f"{run.code}: {run.message}", file=sys.stderr)
    return EXIT_STATUS[run.code or ErrorCode.E_INTERNAL]


def _run_several(
    system: System,
    apps: list[tuple[Manifest, Path]],
    workspace: Path,
    inputs: dict[str, str],
    args: argparse.Namespace,
) -> int:
    """`llmos run a.toml b.toml ...`: all approved first, then all at once through one model;
    output lines prefixed with the app's name; the status of the first app that failed."""
    import threading

    from llmos.apps.concurrent import run_apps
    from llmos.kernel.backend import open_backend

    lock = threading.Lock()

    def show(name: str, text: str) -> None:
        with lock:
            for line in text.splitlines() or [""]:
                print(f"{name}: {line}", flush=True)

    runs = run_apps(
        system,
        apps,
        workspace,
        inputs,
        approve=_approver(args.yes),
        backend=lambda: open_backend(system.settings),
        show=show,
    )
    status = 0
    for (manifest, _), run in zip(apps, runs, strict=True):
        if run.ok:
            continue
        if not run.ran:
            print(f"{manifest.name}: not run (another app could not start)", file=sys.stderr)
            continue
        code = run.code or ErrorCode.E_INTERNAL
        print(f"{manifest.name}: {code}: {run.message}", file=sys.stderr)
        status = status or EXIT_STATUS[code]
    return status


def cmd_syscalls(args: argparse.Namespace) -> int:
    """List the syscall table, or print its JSON Schema."""
    from llmos.apps.plugins import build_registry

    registry, report = build_registry()
    if args.schema:
        print(json.dumps(registry.json_schema(), indent=2))
        return 0
    for spec in registry.specs():
        print(f"{spec.name:18} {spec.description}")
    for label, why in report.failed.items():
        print(f"skipped plugin {label}: {why}", file=sys.stderr)
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    """List the undo journal's change sets, or restore one (asking first on a terminal)."""
    from llmos.system import System
    from llmos.undo import confirm_on_terminal, list_lines, undo

    with System(_settings(args), plugins=False) as system:
        if args.list:
            print("\n".join(list_lines(system, _workspace(args))))
            return 0
        confirm = None if args.yes else confirm_on_terminal
        if confirm is not None and not sys.stdin.isatty():
            raise LlmosError(ErrorCode.E_INVAL, "no terminal to confirm on; add --yes to undo")
        print("\n".join(undo(system, _workspace(args), args.number, confirm)))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify the audit log's chain and signatures."""
    from llmos.security.audit import verify_log
    from llmos.security.keys import Signer, load_or_create_key

    settings = _settings(args)
    home = settings.ensure_home()
    path = Path(args.log) if args.log else home / "audit.log"
    signer = Signer(load_or_create_key(home / "keys" / "install.key"))
    count, problems = verify_log(path, signer)
    for problem in problems:
        print(f"{path}:{problem.line}: {problem.reason}")
    if problems:
        print(f"audit log FAILED verification: {len(problems)} problem(s) in {count} lines")
        return 1
    print(f"audit log OK: {count} lines verified ({path})")
    return 0


def _write_figures(args: argparse.Namespace, figures: object) -> int:
    """A bench's figures to `--json OUT` when asked; the exit status (0)."""
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Print benchmark figures."""
    from llmos.bench.dispatch import bench_dispatch

    if args.what == "dispatch":
        bench_dispatch(args.n)
        return 0
    if args.what == "kernel":
        from llmos.bench.kernel import bench_kernel

        sizes = tuple(int(n) for n in args.table_sizes.split(",") if n.strip())
        figures = bench_kernel(_settings(args), table_sizes=sizes, repeat=args.repeat)
        return _write_figures(args, figures)
    if args.what == "memory":
        from llmos.bench.memory import bench_memory

        sizes = tuple(int(n) for n in args.sizes.split(",") if n.strip())
        home = Path(args.home) if args.home else None
        figures = bench_memory(_settings(args), sizes=sizes, samples=args.samples, home=home)
        return _write_figures(args, figures)
    if args.what == "conversation":
        from llmos.bench.conversation import bench_conversation

        figures = bench_conversation(_settings(args), filler_turns=args.turns)
        return _write_figures(args, figures)
    if args.what == "recall":
        from llmos.bench.recall import bench_recall

        if len(args.file) != 1:
            print(
                "usage: llmos bench recall FILE.json [--questions N] [--json OUT]", file=sys.stderr
            )
            return 2
        figures = bench_recall(_settings(args), Path(args.file[0]), questions=args.questions)
        return _write_figures(args, figures)
    if args.what == "sched":
        from llmos.bench.sched import bench_sched, bench_sched_server

        # `llmos --model PATH bench sched` picks another model, like every command.
        settings = _settings(args)
        if args.server_slots:
            from llmos.kernel.models import resolve_model

            model = resolve_model(getattr(args, "model", None) or "small", settings.ensure_home())
            figures = bench_sched_server(
                settings,
                model,
                processes=args.processes,
                slots=args.server_slots,
                policy=args.policy,
                turns=args.history,
            )
        else:
            figures = bench_sched(
                settings, processes=args.processes, policy=args.policy, turns=args.history
            )
        return _write_figures(args, figures)
    if args.what == "priority":
        from llmos.bench.priority import bench_priority

        figures = bench_priority(_settings(args), rounds=args.repeat)
        return _write_figures(args, figures)
    if args.what == "serve":
        from llmos.bench.serve import bench_serve

        figures = bench_serve(getattr(args, "model", None), repeat=args.repeat)
        return _write_figures(args, figures)
    if args.what == "mcp":
        from llmos.bench.mcp import bench_mcp

        figures = bench_mcp(args.n)
        return _write_figures(args, figures)
    if args.what == "sandbox":
        from llmos.bench.sandbox import bench_sandbox

        figures = bench_sandbox()
        return _write_figures(args, figures)
    if args.what == "learning":
        from llmos.bench.learning import bench_learning
        from llmos.evaluation import load_cases
        from llmos.kernel.backend import open_backend

        if not args.file:
            print("usage: llmos bench learning CASES.jsonl ... [--json OUT]", file=sys.stderr)
            return 2
        settings = _settings(args)
        backend = open_backend(settings)
        with _scratch_system(settings) as system:
            figures = bench_learning(system, backend, load_cases(Path(f) for f in args.file))
        return _write_figures(args, figures)
    if args.what == "lessons":
        from llmos.bench.lessons import bench_lessons
        from llmos.kernel.backend import open_backend

        settings = _settings(args)
        figures = bench_lessons(settings, open_backend(settings), size=args.size)
        return _write_figures(args, figures)
    if args.what == "documents":
        from llmos.bench.documents import bench_documents

        figures = bench_documents()
        return _write_figures(args, figures)
    print(f"unknown benchmark {args.what!r}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _scratch_system(settings: Settings) -> Iterator[System]:
    """A system in a temporary LLMOS_HOME using `settings`' model, gone afterwards: what
    an eval or a bench learns or stores never reaches the person's own home."""
    from llmos.config import Settings
    from llmos.system import System

    with (
        tempfile.TemporaryDirectory(prefix="llmos-scratch-home-") as scratch,
        System(Settings(home=Path(scratch), model=settings.model), plugins=False) as system,
    ):
        yield system


def cmd_eval(args: argparse.Namespace) -> int:
    """Run eval cases against the kernel and print per-family pass rates."""
    from llmos.evaluation import CaseResult, load_cases, run_eval
    from llmos.kernel.backend import open_backend

    settings = _settings(args)
    cases = load_cases(Path(f) for f in args.files)
    if args.limit:
        cases = cases[: args.limit]
    conn = _daemon(args)
    if conn is not None:  # the daemon's model, loaded once for every client
        from llmos.kernel.remote import RemoteBackend

        backend: Backend = RemoteBackend(conn)
    else:
        backend = open_backend(settings)

    def show(r: CaseResult) -> None:
        mark = "PASS" if r.passed else "FAIL"
        print(f"{mark} {r.id:10} {r.family:10} {r.seconds:6.1f}s {r.detail}", flush=True)

    with _scratch_system(settings) as system:
        if args.learned:
            taught = system.lessons.import_file(Path(args.learned), system.registry)
            system.lessons.teach_bank(system.examples)
            print(f"taught {len(taught)} examples from {args.learned}", flush=True)
        summary = run_eval(system, backend, cases, report=show)
    print(
        f"model {summary['model']}: {summary['passed']}/{summary['cases']} passed "
        f"({summary['pass_rate']:.0%}); median {summary['median_s']:.1f}s, "
        f"p90 {summary['p90_s']:.1f}s per case"
    )
    for fam, stats in summary["families"].items():
        print(f"  {fam:10} {stats['passed']}/{stats['cases']}  {stats['pass_rate']:.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_tidy(args: argparse.Namespace) -> int:
    """Consolidate now what the shell consolidates when idle (llmos.consolidate)."""
    from llmos.consolidate import consolidate
    from llmos.system import System

    with System(_settings(args), plugins=False) as system:
        warming = system.examples.warm()
        if warming is not None:
            warming.join()
        done = consolidate(system, threading.Event())
    print(f"{done.describe()} in {done.seconds:.1f}s")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    """See, import and erase what llmos learned (the person's examples for the kernel)."""
    from llmos.system import System

    with System(_settings(args)) as system:
        lessons = system.lessons
        if args.action == "import":
            if not args.file:
                print("usage: llmos learn import FILE.jsonl", file=sys.stderr)
                return 2
            added = lessons.import_file(Path(args.file), system.registry, _workspace(args))
            print(f"taught {len(added)} examples from {args.file}")
        elif args.action == "list":
            rows = lessons.all()
            for lesson in rows:
                calls = " ; ".join(json.dumps(c, ensure_ascii=False) for c in lesson.calls)
                where = f"  (in {lesson.workspace})" if lesson.workspace else ""
                print(f"{lesson.id}  {lesson.kind:7} used {lesson.uses:<3} {lesson.request}")
                print(f"          -> {calls}{where}")
            state = "on" if lessons.enabled else "off (kept, not shown to the kernel)"
            print(f"{len(rows)} lessons; learning is {state}")
        elif args.action == "forget":
            if args.all == bool(args.file):
                print("usage: llmos learn forget ID | --all", file=sys.stderr)
                return 2
            gone = lessons.forget(None if args.all else args.file)
            print(f"forgot {gone} lessons")
            return 0 if gone or args.all else 1
        else:
            lessons.set_enabled(args.action == "on")
            print(f"learning is {args.action}")
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """Install, choose and inspect models."""
    from llmos.config import set_config_value
    from llmos.kernel import models

    settings = _settings(args)
    home = settings.ensure_home()
    if args.action == "pull":
        for name in args.names or ["default"]:
            remote = models.hf_spec(name)
            if remote is not None:
                path = models.pull_hf(*remote, home, progress=models.bar(remote[2]))
                print(f"{name}: {path} (sha256 checked against the hub)")
                continue
            source = models.find_source(name)
            path = models.pull(source, home, progress=models.bar(source.name))
            print(f"{source.name}: {path} (sha256 verified)")
        return 0
    if args.action == "use":
        if len(args.names) != 1:
            print("usage: llmos model use NAME|PATH", file=sys.stderr)
            return 2
        spec = args.names[0]
        path = models.resolve_model(spec, home)
        is_path = spec.endswith(".gguf") and models.hf_spec(spec) is None
        keep = str(path) if is_path and path.parent != models.models_dir(home) else spec
        config = set_config_value(home, "model", keep)
        print(f"using {keep} ({path}); saved in {config}")
        return 0
    if args.action == "list":
        try:
            current: Path | None = models.resolve_model(settings.model, home)
        except LlmosError:
            current = None
        listed = set()
        for source in models.MODELS:
            target = models.models_dir(home) / source.filename
            listed.add(target)
            state = "installed" if models.is_verified(source, target) else "not installed"
            mark = "*" if current == target else " "
            aliases = ",".join(source.aliases)
            print(f"{mark} {source.name:40} {aliases:8} {source.size / 1e9:5.2f} GB  {state}")
        for path in models.installed(home):
            if path not in listed:
                mark = "*" if current == path else " "
                print(f"{mark} {path.name:49} {path.stat().st_size / 1e9:5.2f} GB  downloaded")
        return 0
    path = models.resolve_model(args.names[0] if args.names else settings.model, home)
    meta = models.gguf_metadata(path)
    arch = str(meta.get("general.architecture", "?"))
    print(f"model: {path}\nsize: {path.stat().st_size} bytes")
    for label, key in (
        ("name", "general.name"),
        ("architecture", "general.architecture"),
        ("context length", f"{arch}.context_length"),
        ("layers", f"{arch}.block_count"),
        ("file type", "general.file_type"),
    ):
        if key in meta:
            print(f"{label}: {meta[key]}")
    return 0


def cmd_mem(args: argparse.Namespace) -> int:
    """Memory maintenance."""
    from llmos.memory import reindex

    settings = _settings(args)
    count = reindex(settings)
    print(f"memory index rebuilt from the store: {count} records ({settings.home / 'memory'})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Say what this installation has and lacks (see llmos.doctor)."""
    from llmos.doctor import doctor

    report = doctor(_settings(args))
    print(report.render())
    return 1 if report.missing else 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the syscall table as MCP tools on stdin/stdout (see llmos.mcp_server)."""
    from llmos.mcp_server import mcp_process, serve_stdio
    from llmos.system import System

    with System(_settings(args)) as system:
        try:
            process = mcp_process(system, _workspace(args), args.allow, yes=args.yes)
        except LlmosError as exc:
            print(f"{exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_STATUS[exc.code]
        if args.approve_only:
            print(f"approved for MCP clients on {process.workspace.root}", file=sys.stderr)
            return 0
        serve_stdio(system, process)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="llmos", description=__doc__)
    parser.add_argument("--workspace", "-w", help="workspace folder (default: current folder)")
    parser.add_argument("--model", help="GGUF path or model name")
    parser.add_argument("--direct", action="store_true", help="no model: type syscalls only")
    parser.add_argument(
        "--resume", action="store_true", help="continue the last conversation (summary and recall)"
    )
    parser.set_defaults(func=cmd_shell)
    sub = parser.add_subparsers(dest="command")

    call = sub.add_parser("call", help="run one syscall: llmos call fs.read path=notes.txt")
    call.add_argument("words", nargs="*", help="NAME key=value ...")
    call.add_argument("--json", help="the whole call as a JSON object")
    call.add_argument("--output-json", action="store_true", help="print the result as JSON")
    call.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also hold this capability (e.g. fs.delete), repeatable",
    )
    call.set_defaults(func=cmd_call)

    run = sub.add_parser(
        "run", help="run app manifests: llmos run app.toml [more.toml ...] --input k=v"
    )
    run.add_argument(
        "manifest", nargs="+", help="the app's TOML manifest; several run at once, one model"
    )
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a {variable} (given to every app)",
    )
    run.add_argument(
        "--yes", action="store_true", help="approve the apps' new capabilities (remembered)"
    )
    run.set_defaults(func=cmd_run)

    mcp = sub.add_parser(
        "mcp", help="serve the syscalls as MCP tools on stdio: llmos -w DIR mcp [--allow P --yes]"
    )
    mcp.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a capability MCP clients also hold on this workspace (approved once with --yes)",
    )
    mcp.add_argument(
        "--workspace", "-w", default=argparse.SUPPRESS, help="the workspace the client works in"
    )
    mcp.add_argument("--yes", action="store_true", help="approve the --allow patterns (remembered)")
    mcp.add_argument(
        "--approve-only", action="store_true", help="record the approval and exit, serving nothing"
    )
    mcp.set_defaults(func=cmd_mcp)

    serve = sub.add_parser(
        "serve", help="the resident daemon: one model and memory for every llmos of this home"
    )
    serve.add_argument("--stop", action="store_true", help="stop the running daemon")
    serve.set_defaults(func=cmd_serve)

    doc = sub.add_parser(
        "doctor", help="what this installation has and lacks: llama.cpp, GPU, model, memory"
    )
    doc.set_defaults(func=cmd_doctor)

    syscalls = sub.add_parser("syscalls", help="list the syscall table")
    syscalls.add_argument("--schema", action="store_true", help="print the union's JSON Schema")
    syscalls.set_defaults(func=cmd_syscalls)

    undo = sub.add_parser("undo", help="undo the last change set (a turn, a call, an app run)")
    undo.add_argument("number", nargs="?", type=int, help="the change set (see --list)")
    undo.add_argument("--list", action="store_true", help="list this workspace's change sets")
    undo.add_argument("--yes", action="store_true", help="do not ask first")
    undo.set_defaults(func=cmd_undo)

    audit = sub.add_parser("audit", help="audit log tools")
    audit.add_argument("action", choices=["verify"])
    audit.add_argument("--log", help="log file (default: LLMOS_HOME/audit.log)")
    audit.set_defaults(func=cmd_audit)

    bench = sub.add_parser("bench", help="print performance figures")
    bench.add_argument(
        "what",
        choices=[
            *("dispatch", "kernel", "memory", "conversation", "recall", "sched", "sandbox"),
            *("documents", "lessons", "learning", "mcp", "serve", "priority"),
        ],
    )
    bench.add_argument("--size", type=int, default=1000, help="lessons: how many to teach")
    bench.add_argument(
        "file",
        nargs="*",
        help="recall: a conversation in LoCoMo's shape (../shared/eval/locomo); "
        "learning: eval case files",
    )
    bench.add_argument(
        "--questions",
        type=int,
        default=0,
        help="recall: ask N of the questions, spread evenly over the file",
    )
    bench.add_argument("-n", type=int, default=10_000, help="iterations (dispatch)")
    bench.add_argument(
        "--table-sizes",
        default="0,16",
        help="kernel: extra syscalls to register when measuring step-2 prefill (comma list)",
    )
    bench.add_argument("--repeat", type=int, default=1, help="kernel: rounds of the requests")
    bench.add_argument(
        "--sizes", default="1000,10000,100000", help="memory: stored pages to measure at"
    )
    bench.add_argument(
        "--samples", type=int, default=100, help="memory: timed page-outs and page-ins per size"
    )
    bench.add_argument(
        "--home", help="memory: an empty LLMOS_HOME to fill (default: a temporary one)"
    )
    bench.add_argument(
        "--turns", type=int, default=200, help="conversation: turns of other talk between"
    )
    bench.add_argument("--json", help="also write the figures here (all but dispatch)")
    bench.add_argument("--processes", type=int, default=4, help="sched: processes at once")
    bench.add_argument("--policy", choices=["fifo", "rr"], default="rr", help="sched: policy")
    bench.add_argument(
        "--server-slots",
        type=int,
        default=0,
        metavar="N",
        help="sched: against llama-cpp-python's server (started on the small model, or "
        "--model), N requests in flight",
    )
    bench.add_argument(
        "--history",
        type=int,
        default=2,
        help="sched: earlier turns in each process's conversation (prefilled on its first step)",
    )
    bench.set_defaults(func=cmd_bench)

    evals = sub.add_parser("eval", help="run eval cases (JSONL) against the kernel")
    evals.add_argument("files", nargs="+", help="case files in the shared eval format")
    evals.add_argument("--json", help="write the report here")
    evals.add_argument("--limit", type=int, default=0, help="run only the first N cases")
    evals.add_argument(
        "--learned", help="teach these examples (learn import's JSONL) before the cases"
    )
    evals.set_defaults(func=cmd_eval)

    learn = sub.add_parser("learn", help="what llmos learned from you: import, list, forget")
    learn.add_argument("action", choices=["import", "list", "forget", "off", "on"])
    learn.add_argument("file", nargs="?", help="import: a JSONL file; forget: a lesson's id")
    learn.add_argument("--all", action="store_true", help="forget: every lesson")
    learn.set_defaults(func=cmd_learn)

    tidy = sub.add_parser(
        "tidy",
        help="merge learned examples said twice, mark facts stored twice or replaced by later "
        "ones (deletes nothing; the shell does it when idle)",
    )
    tidy.set_defaults(func=cmd_tidy)

    mem = sub.add_parser("mem", help="memory maintenance")
    mem.add_argument("action", choices=["reindex"], help="rebuild the index from the store")
    mem.set_defaults(func=cmd_mem)

    model = sub.add_parser("model", help="install and inspect models")
    model.add_argument("action", choices=["pull", "list", "use", "info"])
    model.add_argument(
        "names",
        nargs="*",
        help="model name or alias (default, small), GGUF path, or Hugging Face "
        "owner/repo:file.gguf",
    )
    model.set_defaults(func=cmd_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `llmos` console script."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except LlmosError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_STATUS[exc.code]
    except KeyboardInterrupt:
        return 130
    return status


def console() -> None:
    """The console script: `main`, then leave at once if a background thread is still at work.

    Interpreter shutdown stops a daemon thread that wakes up by unwinding it with
    pthread_exit; inside llama.cpp or torch (a cancelled job's decode, an embedding warming
    up) that unwinding hits a noexcept frame and aborts the process (exit 134) after everything
    of ours was already closed and flushed. So when such a thread remains, skip finalization."""
    status = main()
    if any(t.daemon and t.is_alive() for t in threading.enumerate()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    console()
