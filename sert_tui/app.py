"""The Textual app. Importing this module must stay light: no torch, no transformers (first frame < 2 s).

The app reads the workspace and renders; jobs run in their own processes (``engine.launcher``) and a person's
decisions go to the workspace through one writer thread (``DecisionWriter``). Job control lives here so that
keys and the command palette offer the same actions.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.errors import first_line
from engine.launcher import Launcher
from sert_tui.screens.home import HomeScreen

if TYPE_CHECKING:
    from db.app_queries import JobInfo
    from sert_tui.screens.paths import DecisionWriter


class SertCommands(Provider):
    """The command palette: the app's actions, the current screen's keys, and every job by number."""

    def _commands(self) -> list[tuple[str, str, object]]:
        app: SertApp = self.app  # type: ignore[assignment]
        cmds: list[tuple[str, str, object]] = [
            (
                "Start the default job",
                "bundled student, generated reasoning-gym data: sample then filter",
                app.action_start_default,
            ),
            ("New job…", "a form with the paper's defaults", app.action_new_job),
            (
                "Start a job from a config file…",
                "a TOML experiment config and the stage(s) to run",
                app.action_config_job,
            ),
            ("Results", "Table II comparison and per-question predictions", app.action_results),
            ("Home", "datasets, jobs, models, checkpoints", app.action_home),
            ("Help: every key", "keys of every screen", app.action_help),
            ("Launch log", "full output of the newest job process this app started", app.show_launch_log),
        ]
        screen = self.screen
        for binding in getattr(type(screen), "BINDINGS", []):
            if isinstance(binding, Binding) and binding.description and not binding.action.startswith("app."):
                cmds.append(
                    (
                        f"{binding.description} [{binding.key}]",
                        "on this screen",
                        partial(screen.run_action, binding.action),
                    )
                )
        for job in app.known_jobs:
            cmds.append(
                (
                    f"Open job {job.id} ({job.kind}, {job.status})",
                    job.label or job.dataset,
                    partial(app.open_job, job.id, job.kind),
                )
            )
            if job.status in ("pending", "running"):
                cmds.append(
                    (
                        f"Cancel job {job.id} ({job.kind})",
                        "asks the job to stop; finished work is kept",
                        partial(app.cancel_job, job),
                    )
                )
            if job.error:
                cmds.append(
                    (
                        f"Error of job {job.id} ({job.kind})",
                        first_line(job.error, 80),
                        partial(app.show_error, job),
                    )
                )
        return cmds

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands()[:7]:
            yield DiscoveryHit(title, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)  # type: ignore[arg-type]


class SertApp(App):
    """sert-tui: browse the workspace, curate reasoning paths, watch jobs."""

    CSS_PATH = "sert_tui.tcss"
    TITLE = "sert-tui"
    COMMANDS = App.COMMANDS | {SertCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("r", "refresh", "Refresh", show=False),
    ]

    def __init__(self, workspace: Path, engine=None):
        """``engine``: an engine already open on this workspace in this process (opening a workspace twice in
        one process is best avoided: see db.session's header check)."""
        super().__init__()
        self.workspace = Path(workspace)
        self.sub_title = str(self.workspace)
        self._engine = engine
        self._owns_engine = engine is None
        self._open_lock = threading.Lock()
        self.workspace_error: Exception | None = None
        self._writer: DecisionWriter | None = None
        self.launcher = Launcher(self.workspace)

    # -- the workspace -------------------------------------------------------------------------------
    @property
    def db(self):
        """The workspace's SQLAlchemy engine, opened (and migrated) on first use, from any thread.

        The home screen's first read opens it off the UI thread, so that the first frame does not wait for
        SQLAlchemy, alembic and a migration. A workspace that cannot be opened ends the app with its error.
        """
        if self._engine is None:
            with self._open_lock:
                if self._engine is None:
                    from db.session import open_workspace

                    try:
                        self._engine = open_workspace(self.workspace)
                    except Exception as exc:
                        self.workspace_error = exc
                        try:
                            self.call_from_thread(self.exit, None, 2)
                        except RuntimeError:  # already on the app's thread
                            self.exit(None, 2)
                        raise
        return self._engine

    @property
    def decision_writer(self) -> DecisionWriter:
        if self._writer is None:
            from sert_tui.screens.paths import DecisionWriter

            self._writer = DecisionWriter(self.db, on_error=self._write_failed)
        return self._writer

    def _write_failed(self, exc: Exception) -> None:
        self.call_from_thread(self.notify, f"a decision could not be written: {exc}", severity="error", timeout=10)

    @property
    def known_jobs(self) -> list[JobInfo]:
        home = next((s for s in self.screen_stack if isinstance(s, HomeScreen)), None)
        return home.jobs if home is not None else []

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())

    def on_unmount(self) -> None:
        if self._writer is not None:
            self._writer.close()  # every decision made is written before the app goes
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()

    # -- navigation ------------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        for method in ("reload", "poll"):
            if hasattr(self.screen, method):
                getattr(self.screen, method)()
                return

    def action_help(self) -> None:
        from sert_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_home(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, HomeScreen):
            self.pop_screen()

    def action_results(self, focus_job: int | None = None) -> None:
        from sert_tui.screens.results import ResultsScreen

        self.push_screen(ResultsScreen(focus_job))

    def open_paths(self, job_id: int) -> None:
        from sert_tui.screens.paths import PathsScreen

        self.push_screen(PathsScreen(job_id))

    def open_monitor(self, job_ids: list[int]) -> None:
        from sert_tui.screens.monitor import MonitorScreen

        self.push_screen(MonitorScreen(job_ids))

    def open_job(self, job_id: int, kind: str, also: list[int] | None = None) -> None:
        """A job's own view: its paths, its training curves (with the marked runs overlaid) or its results."""
        from db.app_queries import PATH_KINDS, TRAINING_KINDS

        if kind in PATH_KINDS:
            self.open_paths(job_id)
        elif kind in TRAINING_KINDS:
            others = [j.id for j in self.known_jobs if j.id in (also or []) and j.kind in TRAINING_KINDS]
            self.open_monitor([job_id, *[j for j in others if j != job_id]])
        elif kind == "eval":
            self.action_results(job_id)
        else:
            self.notify(f"job {job_id} ({kind}) has no view of its own")

    # -- job control -----------------------------------------------------------------------------------
    def action_start_default(self) -> None:
        from engine.launcher import DEFAULT_STAGES, default_config_path

        config = default_config_path(self.workspace)
        if any(launch.config == config and launch.running for launch in self.launcher.launches):
            self.notify("the default job is already running")
            return
        try:
            launch = self.launcher.start_default()
        except Exception as exc:
            self.notify(f"could not start the default job: {exc}", severity="error", timeout=10)
            return
        self.notify(
            f"started the default job (pid {launch.pid}): {' then '.join(DEFAULT_STAGES)} · config {launch.config}",
            timeout=6,
        )
        self.action_refresh()

    def start(self, config: Path, stages: list[str]) -> None:
        try:
            launch = self.launcher.start(config, stages)
        except Exception as exc:
            self.notify(f"could not start: {exc}", severity="error", timeout=10)
            return
        self.notify(f"started {'+'.join(stages)} (pid {launch.pid}) from {config}", timeout=6)
        self.action_refresh()

    def action_config_job(self) -> None:
        from engine.launcher import default_config_path
        from sert_tui.screens.modals import ConfigFileScreen

        initial = default_config_path(self.workspace)

        def done(result: tuple[Path, list[str]] | None) -> None:
            if result is not None:
                self.start(*result)

        self.push_screen(ConfigFileScreen(str(initial) if initial.exists() else ""), done)

    def action_new_job(self) -> None:
        from sert_tui.screens.modals import NewJobScreen

        home = next((s for s in self.screen_stack if isinstance(s, HomeScreen)), None)
        datasets = [d["name"] for d in home.datasets] if home is not None else []

        def done(result: tuple[dict, list[str]] | None) -> None:
            if result is None:
                return
            from engine.launcher import write_form_config

            values, stages = result
            self.start(write_form_config(self.workspace, values), stages)

        self.push_screen(NewJobScreen(datasets), done)

    def cancel_job(self, job: JobInfo) -> None:
        from sert_tui.screens.modals import ConfirmScreen

        if job.status not in ("pending", "running"):
            self.notify(f"job {job.id} is {job.status}: nothing to cancel")
            return
        ours = self.launcher.started_job(job.pid, job.host)
        who = "started by this app" if ours else "running headless (not started by this app)"
        question = f"Cancel job {job.id} ({job.kind}, {who})?\nIt stops at its next check; finished work is kept."

        def done(yes: bool | None) -> None:
            if yes:
                from engine.launcher import cancel_job

                cancel_job(self.db, job.id)
                self.notify(f"asked job {job.id} to stop")
                self.action_refresh()

        self.push_screen(ConfirmScreen(question, yes="Cancel the job", no="Keep it running"), done)

    def show_error(self, job: JobInfo) -> None:
        from sert_tui.screens.modals import TextScreen

        if not job.error:
            self.notify(f"job {job.id} has no error ({job.status})")
            return
        self.push_screen(TextScreen(f"job {job.id} ({job.kind}) {job.status}", job.error))

    def show_launch_log(self) -> None:
        from sert_tui.screens.modals import TextScreen

        if not self.launcher.launches:
            self.notify("this app has started no job process yet")
            return
        launch = self.launcher.launches[-1]
        self.push_screen(TextScreen(f"pid {launch.pid} · {'+'.join(launch.stages)} · {launch.log}", launch.log_text()))

    # -- quitting ----------------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        """Quit; asks first when job processes this app started still run. Headless jobs are never touched."""
        running = self.launcher.running()
        if not running:
            self.exit()
            return
        from sert_tui.screens.modals import QuitScreen

        lines = [f"pid {launch.pid}: {'+'.join(launch.stages)} ({launch.config.name})" for launch in running]

        def done(choice: str | None) -> None:
            if choice == "cancel":
                self.cancel_started_jobs()
                self.exit()
            elif choice == "leave":
                self.exit()

        self.push_screen(QuitScreen(lines), done)

    def cancel_started_jobs(self) -> list[int]:
        """Ask every active job of a process this app started to stop; returns their ids."""
        from sqlmodel import select

        from db.models import Job
        from db.session import session_scope
        from engine.launcher import cancel_job

        pids = {launch.pid for launch in self.launcher.running()}
        with session_scope(self.db) as s:
            jobs = s.exec(select(Job).where(Job.status.in_(("pending", "running")))).all()  # type: ignore[attr-defined]
            ids = [j.id for j in jobs if self.launcher.started_job(j.pid, j.host) and j.pid in pids]
            owners = {j.pid for j in jobs}
        for job_id in ids:
            cancel_job(self.db, job_id)  # type: ignore[arg-type]
        # A process that has not created its job row yet (loading, generating data) is interrupted instead:
        # it is ours, and the person asked to cancel it.
        for launch in self.launcher.running():
            if launch.pid not in owners:
                launch.interrupt()
        return ids  # type: ignore[return-value]


SQLITE_MAGIC = b"SQLite format 3\x00"


def run_app(workspace: Path) -> int:
    """Run the app on a workspace; a workspace that cannot be opened is one error line (exit 2)."""
    from engine.errors import WorkspaceError

    workspace = Path(workspace).expanduser()
    # The cheap check before the UI starts; the full open (schema, migration) runs behind the first frame.
    if workspace.is_dir():
        raise WorkspaceError(f"{workspace}: is a directory, not a workspace file")
    try:
        if workspace.exists() and workspace.stat().st_size:
            with workspace.open("rb") as fh:
                if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise WorkspaceError(f"{workspace}: not a sert-tui workspace (not an SQLite database)")
    except OSError as exc:
        raise WorkspaceError(f"{workspace}: cannot read the workspace ({exc.strerror or exc})") from None
    from sert_tui import hangup

    app = SertApp(workspace)
    hangup.watch()  # a terminal that goes away ends the app (after the decisions made are written)
    app.run()
    if app.workspace_error is not None:
        if isinstance(app.workspace_error, WorkspaceError):
            raise app.workspace_error
        raise WorkspaceError(f"{workspace}: {app.workspace_error}")
    return app.return_code or 0
