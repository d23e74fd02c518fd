"""The Textual app. Importing this module must stay light: no torch, no transformers (first frame < 2 s).

The app reads the workspace and renders; jobs run in their own processes (``engine.pipeline.processes``) and a person's
decisions go to the workspace through one writer thread (``sert_tui.services.decisions.DecisionWriter``), which
at start re-applies the decisions an earlier session had to keep in the workspace's journal. Job control lives
here so that keys and the command palette offer the same actions.
"""

from __future__ import annotations

import functools
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message

from db.errors import first_line
from sert_tui.context import WorkspaceApp
from sert_tui.keymap import clashes, config_path, load_keymap, parse_keymap
from sert_tui.screens.home import HomeScreen

if TYPE_CHECKING:
    from collections.abc import Mapping

    from db.app_queries import JobInfo
    from engine.pipeline.processes import Launcher
    from sert_tui.screens.paths import PathsScreen
    from sert_tui.services.decisions import DecisionWriter


class SertCommands(Provider):
    """The command palette: the app's actions, the current screen's keys, and every job by number."""

    def _commands(self) -> list[tuple[str, str, object]]:
        app = self.app
        assert isinstance(app, SertApp)
        cmds: list[tuple[str, str, object]] = [
            (
                "Start the default job",
                "bundled student, generated reasoning-gym data: sample, filter, self-train, eval; then the results",
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
                        f"{binding.description} [{app.keymap.get(binding.id or '', binding.key)}]",
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


class SertApp(WorkspaceApp):
    """sert-tui: browse the workspace, curate reasoning paths, watch jobs."""

    CSS_PATH = "sert_tui.tcss"
    TITLE = "sert-tui"
    COMMANDS = App.COMMANDS | {SertCommands}
    HELP_TITLE = "Everywhere"
    BINDINGS = [
        Binding(
            "q", "quit", "Quit", tooltip="quit; asks first while job processes this app started run", id="app.quit"
        ),
        Binding("question_mark", "help", "Help", tooltip="every key of every screen, with its id", id="app.help"),
        Binding("ctrl+r", "refresh", "Refresh", show=False, tooltip="re-read the workspace now", id="app.refresh"),
    ]
    #: Keys that are Textual's own, listed in the help beside ours.
    HELP_EXTRA = (
        ("ctrl+p", "command palette: every action of the current screen, jobs by number, themes"),
        ("tab / shift+tab", "move between tables and fields"),
    )

    def __init__(
        self, workspace: Path, engine=None, keymap: Mapping[str, str] | None = None, config: Path | None = None
    ):
        """``engine``: an engine already open on this workspace in this process (opening a workspace twice in
        one process is best avoided: see db.session's header check). ``keymap``: binding id → keys, instead of
        the ``[keymap]`` table of the config file ``config`` (default: :func:`sert_tui.keymap.config_path`)."""
        super().__init__()
        self.config_path = config_path() if config is None else Path(config)
        loaded = parse_keymap(keymap, where="keymap") if keymap is not None else load_keymap(self.config_path)
        self._keymap_where = "keymap" if keymap is not None else str(self.config_path)
        #: The keymap in force (binding id → keys); what was wrong in it is reported once the app shows.
        self.keymap: dict[str, str] = loaded.bindings
        self._keymap_problems = loaded.problems
        self.set_keymap(self.keymap)
        self.workspace = Path(workspace)
        self.sub_title = str(self.workspace)
        self._engine = engine
        self._owns_engine = engine is None
        self._open_lock = threading.Lock()
        self.workspace_error: Exception | None = None
        self._writer: DecisionWriter | None = None
        self._writer_lock = threading.RLock()
        self._unmounted = False

    @functools.cached_property
    def launcher(self) -> Launcher:
        """Starts and stops the job processes; imported on first use, since engine.pipeline brings SQLAlchemy,
        which the first frame does not wait for."""
        from engine.pipeline.processes import Launcher

        return Launcher(self.workspace)

    # -- the workspace -------------------------------------------------------------------------------
    @property
    def db(self):
        """The workspace's SQLAlchemy engine, opened (and migrated) on first use, from any thread.

        The home screen's first read opens it off the UI thread, so that the first frame does not wait for
        SQLAlchemy, alembic and a migration. A workspace that cannot be opened ends the app with its error.
        """
        if self._engine is None:
            with self._open_lock:
                if self._engine is None and self.workspace_error is not None:
                    raise self.workspace_error  # reported once; another thread asking does not open it again
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
            with self._writer_lock:
                if self._writer is None:
                    from sert_tui.services.decisions import DecisionWriter

                    self._writer = DecisionWriter(self.db, report=self._writer_report)
        return self._writer

    class WriterReport(Message):
        """What the decision writer tells the person (posted from its thread)."""

        def __init__(self, text: str, severity: str) -> None:
            super().__init__()
            self.text, self.severity = text, severity

    def _writer_report(self, message: str, severity: str) -> None:
        # Posted, never waited for: the writer must not wait on the UI thread, which may itself be waiting
        # for the writer (a flush, the drain when the app ends).
        self.post_message(self.WriterReport(message, severity))

    def on_sert_app_writer_report(self, report: WriterReport) -> None:
        self.notify(report.text, severity=report.severity, timeout=10)  # type: ignore[arg-type]

    def _behind_first_frame(self) -> None:
        """Once the first frame is on screen: import the database layer (SQLAlchemy, SQLModel, alembic: most of a
        second) on this thread, then open the workspace and start the decision writer off it, and read the home
        screen. One thread imports it: threads importing SQLAlchemy at the same time failed with "cannot import
        name ... from partially initialized module" (the home screen's read, the writer's start and a job
        started at once by the `d` key)."""
        import db.app_queries  # noqa: F401
        import db.session  # noqa: F401

        self.run_worker(self._start_writer, thread=True, exit_on_error=False, name="decision-writer-start")
        home = self.home_screen
        if home is not None:
            home.reload()

    def _start_writer(self) -> None:
        """Start the decision writer behind the first frame: it re-applies decisions an earlier session kept."""
        with self._writer_lock:  # not after the app has gone: nobody would close the writer
            if self._unmounted:
                return
            try:
                self.decision_writer  # noqa: B018
            except Exception:  # a workspace that cannot be opened ends the app (see ``db``)
                pass

    @property
    def home_screen(self) -> HomeScreen | None:
        """The home screen, wherever it is in the stack (None before it is pushed)."""
        return next((s for s in self.screen_stack if isinstance(s, HomeScreen)), None)

    @property
    def known_jobs(self) -> list[JobInfo]:
        home = self.home_screen
        return home.jobs if home is not None else []

    #: The collector's thresholds while the app runs: rendering a frame allocates thousands of objects, and at
    #: Python's default (700, 10, 10) a key press of the review screen paid a dozen collections (p95 +40%,
    #: benchmarks/app_latency.py --review); the screens also freeze what they loaded (gc.freeze) once read.
    GC_THRESHOLDS = (10_000, 50, 50)

    def on_mount(self) -> None:
        import gc

        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(*self.GC_THRESHOLDS)
        self.push_screen(HomeScreen())
        self.call_after_refresh(self._behind_first_frame)
        if self.keymap or self._keymap_problems:  # no keymap: nothing to check, no screen module to import
            self.call_after_refresh(self._check_keymap)

    # -- the keymap ------------------------------------------------------------------------------------
    def help_classes(self) -> list[type]:
        """Every class whose bindings the help lists (and a keymap may name), in the help's order."""
        from sert_tui.screens.explorer import FilterExplorerScreen
        from sert_tui.screens.help import HelpScreen
        from sert_tui.screens.modals import ConfirmScreen, FormScreen, QuitScreen, TextScreen
        from sert_tui.screens.monitor import MonitorScreen
        from sert_tui.screens.paths import PathsScreen
        from sert_tui.screens.results import PredictionsScreen, ResultsScreen
        from sert_tui.screens.review import ReviewScreen
        from sert_tui.widgets.path_table import PathTable

        return [
            type(self),
            HomeScreen,
            PathsScreen,
            PathTable,
            ReviewScreen,
            FilterExplorerScreen,
            MonitorScreen,
            ResultsScreen,
            PredictionsScreen,
            ConfirmScreen,
            QuitScreen,
            TextScreen,
            FormScreen,
            HelpScreen,
        ]

    def _check_keymap(self) -> None:
        """Report what was wrong in the keymap (after the first frame: the ids need every screen's module)."""
        from sert_tui.screens.help import binding_ids, bindings_of

        known = set(binding_ids(self.help_classes()))
        unknown = [binding_id for binding_id in self.keymap if binding_id not in known]
        problems = list(self._keymap_problems)
        for binding_id in unknown:
            del self.keymap[binding_id]
            problems.append(
                f"{self._keymap_where}: {binding_id!r}: no binding has this id (the help screen, ?, lists them)"
            )
        if unknown:
            self.set_keymap(self.keymap)
        for problem in problems:
            self.notify(problem, title="keymap: entry left out", severity="error", timeout=20)
        for cls in self.help_classes():
            for clash in clashes(bindings_of(cls), self.keymap, self._keymap_where):
                self.notify(clash, title="keymap: clash", severity="warning", timeout=20)

    def on_unmount(self) -> None:
        import gc

        gc.unfreeze()  # what the screens froze (their long-lived objects) is the collector's again
        gc.set_threshold(*getattr(self, "_gc_thresholds", gc.get_threshold()))
        with self._writer_lock:
            self._unmounted = True
        if self._writer is not None:
            self._writer.close()  # every decision made is written, or kept in the journal, before the app goes
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
            note = f"Any of these keys can be remapped by its id in the [keymap] table of {self.config_path}."
            self.push_screen(HelpScreen(self.help_classes(), self.keymap, note))

    def action_home(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, HomeScreen):
            self.pop_screen()

    def action_results(self, focus_job: int | None = None) -> None:
        from sert_tui.screens.results import ResultsScreen

        self.push_screen(ResultsScreen(focus_job))

    def open_paths(self, job_id: int) -> None:
        from sert_tui.screens.paths import PathsScreen

        self.push_screen(PathsScreen(job_id))

    def open_explorer(self, job_id: int) -> None:
        """The filter explorer of a sample job (or of the sample job of a filter job)."""
        from sert_tui.screens.explorer import FilterExplorerScreen

        self.push_screen(FilterExplorerScreen(job_id))

    def open_review(self, job_id: int) -> None:
        """The review screen of a sample job (or of the sample job of a filter job): one question at a time."""
        from sert_tui.screens.review import ReviewScreen

        self.push_screen(ReviewScreen(job_id))

    def on_home_screen_open_review(self, message: HomeScreen.OpenReview) -> None:
        self.open_review(message.job_id)

    def on_paths_screen_open_review(self, message: PathsScreen.OpenReview) -> None:
        self.open_review(message.job_id)

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

    # What the home screen asks for (it posts these upward rather than calling the app).
    def on_home_screen_open_job(self, message: HomeScreen.OpenJob) -> None:
        self.open_job(message.job_id, message.kind, also=message.also)

    def on_home_screen_open_explorer(self, message: HomeScreen.OpenExplorer) -> None:
        self.open_explorer(message.job_id)

    def on_paths_screen_open_explorer(self, message: PathsScreen.OpenExplorer) -> None:
        self.open_explorer(message.job_id)

    def on_home_screen_open_monitor(self, message: HomeScreen.OpenMonitor) -> None:
        self.open_monitor(message.job_ids)

    def on_home_screen_cancel_job(self, message: HomeScreen.CancelJob) -> None:
        self.cancel_job(message.job)

    def on_home_screen_show_error(self, message: HomeScreen.ShowError) -> None:
        self.show_error(message.job)

    def on_home_screen_show_launch_log(self, _message: HomeScreen.ShowLaunchLog) -> None:
        self.show_launch_log()

    # -- job control -----------------------------------------------------------------------------------
    def action_start_default(self) -> None:
        from engine.pipeline.processes import DEFAULT_STAGES, default_config_path

        config = default_config_path(self.workspace)
        if any(launch.config == config and launch.running for launch in self.launcher.launches):
            self.notify("the default job is already running")
            return
        try:
            self.db  # noqa: B018 -- the workspace exists and is migrated before a job process opens it
            launch = self.launcher.start_default()
        except Exception as exc:
            self.notify(f"could not start the default job: {exc}", severity="error", timeout=10)
            return
        self.notify(
            f"started the default job (pid {launch.pid}): {' then '.join(DEFAULT_STAGES)} · config {launch.config}"
            " · the results open when it ends",
            timeout=6,
        )
        self.action_refresh()
        self._open_results_when_done(launch)

    def _open_results_when_done(self, launch) -> None:
        """Poll the default loop's process (never wait on it: the UI thread stays free) and open the results,
        zero-shot beside SERT, when it ends well."""

        def check() -> None:
            code = launch.returncode
            if code is None:
                return
            timer.stop()
            if code == 0:
                from sert_tui.screens.results import ResultsScreen

                self.notify("the default job is done: zero-shot and SERT side by side", timeout=8)
                if not isinstance(self.screen, ResultsScreen):
                    self.action_results()
                self._explain_default(launch.config)
            else:
                self.notify(
                    f"the default job ended with status {code}: l on the home screen shows its log",
                    severity="warning",
                    timeout=10,
                )

        timer = self.set_interval(DEFAULT_POLL_SECONDS, check)

    @work(thread=True, group="default-outcome", exclusive=True)
    def _explain_default(self, config: Path) -> None:
        """In plain words, off the UI thread: what the default loop trained, what its numbers mean, what next
        (engine.pipeline.rounds.outcome_lines, the same lines as ``run --default``)."""
        from engine.config import load_config
        from engine.pipeline.rounds import outcome_lines

        try:
            lines = outcome_lines(self.engine, load_config(config).data.dataset)
        except Exception as exc:  # a notification, never a crash of the app
            lines = [f"could not read the default job's results: {exc}"]
        self.call_from_thread(self.notify, "\n".join(lines), title="The default loop", timeout=30)

    def start(self, config: Path, stages: list[str]) -> None:
        try:
            # The app creates and migrates the workspace behind its first frame; a job process started before
            # that is done found an SQLite file without sert-tui's tables ("not a sert-tui workspace"). Opening
            # it here waits for that (under db's lock), only when a job is started in the app's first second.
            self.db  # noqa: B018
            launch = self.launcher.start(config, stages)
        except Exception as exc:
            self.notify(f"could not start: {exc}", severity="error", timeout=10)
            return
        self.notify(f"started {'+'.join(stages)} (pid {launch.pid}) from {config}", timeout=6)
        self.action_refresh()

    def action_config_job(self) -> None:
        from engine.pipeline.processes import default_config_path
        from sert_tui.screens.modals import ConfigFileScreen

        initial = default_config_path(self.workspace)

        def done(result: tuple[Path, list[str]] | None) -> None:
            if result is not None:
                self.start(*result)

        self.push_screen(ConfigFileScreen(str(initial) if initial.exists() else ""), done)

    def action_new_job(self) -> None:
        from sert_tui.screens.modals import NewJobScreen

        home = self.home_screen
        datasets = [d["name"] for d in home.datasets] if home is not None else []

        def done(result: tuple[dict, list[str]] | None) -> None:
            if result is None:
                return
            from engine.pipeline.processes import write_form_config

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
                from engine.pipeline.processes import cancel_job

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
        from engine.pipeline.processes import cancel_job

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
#: How often the app looks whether the default loop it started has ended (a non-blocking poll).
DEFAULT_POLL_SECONDS = 1.0


def run_app(workspace: Path) -> int:
    """Run the app on a workspace; a workspace that cannot be opened is one error line (exit 2)."""
    from db.errors import WorkspaceError

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
    import sys

    from sert_tui import hangup

    app = SertApp(workspace)
    hangup.watch()  # a terminal that goes away ends the app (after the decisions made are written)
    app.run()
    writer = app._writer
    if writer is not None and writer.kept_on_close:
        print(
            f"note: decisions that could not be written yet are kept in {writer.journal}; "
            "they are written at the next start",
            file=sys.stderr,
        )
    if app.workspace_error is not None:
        if isinstance(app.workspace_error, WorkspaceError):
            raise app.workspace_error
        raise WorkspaceError(f"{workspace}: {app.workspace_error}")
    return app.return_code or 0
