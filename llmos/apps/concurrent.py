"""Several apps at once (`llmos run a.toml b.toml`): every app is approved before any runs, then
each runs as its own process in its own thread, and one model serves them all through a
scheduler (opened on the first request step that needs it)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from llmos.apps.manifest import (
    AppHost,
    Approver,
    AppRun,
    Manifest,
    PreparedApp,
    declared_tools,
    prepare_app,
    run_prepared,
)
from llmos.errors import ErrorCode, LlmosError, from_exception
from llmos.kernel.host import ModelHost

if TYPE_CHECKING:
    from llmos.kernel.backend import Backend
    from llmos.kernel.scheduler import SchedulerClient


@contextmanager
def all_tools(system: AppHost, manifests: Sequence[Manifest]) -> Iterator[None]:
    """Every app's tools declared for the length of the whole run (so the syscall table, and
    with it the kernel's prompt, stays the same while the apps run); E_EXISTS names both apps
    when two declare a tool of the same name."""
    owner: dict[str, str] = {}
    with ExitStack() as stack:
        for manifest in manifests:
            for name in manifest.tools:
                if name in owner:
                    raise LlmosError(
                        ErrorCode.E_EXISTS,
                        f"app {manifest.name}: tool {name!r} is also declared by app "
                        f"{owner[name]}; apps run together need distinct tool names",
                    )
                owner[name] = manifest.name
            stack.enter_context(declared_tools(system, manifest))
        yield


def run_apps(
    system: AppHost,
    apps: Sequence[tuple[Manifest, Path]],
    workspace: Path,
    inputs: dict[str, str],
    *,
    approve: Approver,
    backend: Callable[[], Backend] | None = None,
    show: Callable[[str, str], None],
) -> list[AppRun]:
    """Run several apps at once, one process and one thread each, and return how each ended
    (in the order given). Every app is prepared first (variables filled in, capabilities
    approved or asked for); if any cannot be, none runs: its run carries the failure and the
    others are marked not run. `backend` opens the one model that a scheduler shares among the
    apps' request steps; `show(app name, line)` gets each app's output."""
    runs = [AppRun() for _ in apps]
    with all_tools(system, [manifest for manifest, _ in apps]):
        prepared: list[PreparedApp] = []
        for i, (manifest, source) in enumerate(apps):
            try:
                prepared.append(
                    prepare_app(system, manifest, source, workspace, inputs, approve=approve)
                )
            except LlmosError as exc:
                runs[i].fail(exc.code, exc.message)
        if len(prepared) < len(apps):
            for run in runs:
                if run.ok:
                    run.ok, run.ran, run.message = False, False, "not run"
            return runs
        model = ModelHost(backend) if backend is not None else None
        threads = [
            threading.Thread(
                target=_run_one,
                args=(system, app, runs[i], model, show),
                name=f"llmos-app-{app.manifest.name}",
                daemon=True,
            )
            for i, app in enumerate(prepared)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            if model is not None:
                model.close()
    return runs


def _run_one(
    system: AppHost,
    app: PreparedApp,
    run: AppRun,
    model: ModelHost | None,
    show: Callable[[str, str], None],
) -> None:
    """One app's thread: its steps, its model client (closed at the end), its outcome in `run`."""
    clients: list[SchedulerClient] = []

    def open_client() -> Backend:
        assert model is not None
        client = model.client(app.process.name, background=True)
        clients.append(client)
        return client

    name = app.manifest.name
    try:
        done = run_prepared(
            system,
            app,
            backend=open_client if model is not None else None,
            show=lambda line: show(name, line),
        )
        run.results, run.replies = done.results, done.replies
        if not done.ok:
            run.fail(done.code or ErrorCode.E_INTERNAL, done.message)
    except Exception as exc:  # a bug in one app's run must not take the others down
        error = from_exception(exc)
        run.fail(error.code, error.message)
    finally:
        for client in clients:
            client.close()
