"""Home: the workspace's datasets, jobs, job processes this app started, models and checkpoints.

The tables refresh every second from a worker thread. Job control lives on the app (``SertApp``) so that the
command palette offers the same actions; this screen binds them to keys on the highlighted job and posts them
upward as messages (``HomeScreen.OpenJob``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from db.errors import first_line
from sert_tui.context import workspace_app

if TYPE_CHECKING:
    from db.app_queries import HomeSnapshot, JobInfo

REFRESH_SECONDS = 1.0

STATUS_STYLE = {
    "running": "bold cyan",
    "pending": "cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}


def _time(value) -> str:
    return value.strftime("%m-%d %H:%M:%S") if value else ""


class HomeScreen(Screen):
    """The first screen: what the workspace holds and what runs."""

    HELP_TITLE = "Home"
    BINDINGS = [
        Binding(
            "enter",
            "open_job",
            "Open job",
            show=False,
            tooltip="open the highlighted job: its paths (sample/filter/teacher), training monitor or results (eval)",
            id="home.open_job",
        ),
        Binding(
            "d",
            "app.start_default",
            "Default job",
            tooltip="start the embedded default loop: the bundled student samples, the paper's filters run, it "
            "self-trains and is evaluated beside zero-shot; the results open at the end",
            id="home.start_default",
        ),
        Binding("n", "app.new_job", "New job", tooltip="a form with the paper's defaults", id="home.new_job"),
        Binding(
            "o",
            "app.config_job",
            "From config",
            tooltip="start a job from a TOML experiment config and the stage(s) to run",
            id="home.config_job",
        ),
        Binding(
            "c",
            "cancel_job",
            "Cancel job",
            tooltip="ask the highlighted job to stop (asks first; finished work is kept)",
            id="home.cancel_job",
        ),
        Binding("e", "show_error", "Error", tooltip="the highlighted job's error in full", id="home.show_error"),
        Binding(
            "l",
            "show_log",
            "Launch log",
            show=False,
            tooltip="full log of the newest job process this app started",
            id="home.launch_log",
        ),
        Binding(
            "m",
            "mark",
            "Mark for overlay",
            show=False,
            tooltip="mark a training job; the monitor overlays the marked runs",
            id="home.mark",
        ),
        Binding(
            "t",
            "monitor",
            "Monitor",
            show=False,
            tooltip="training monitor of the highlighted job plus the marked ones",
            id="home.monitor",
        ),
        Binding(
            "w",
            "explore",
            "Filter explorer",
            show=False,
            tooltip="the filter explorer of the highlighted sample (or filter) job: histograms, thresholds, what-if "
            "counts, apply as a new filter job",
            id="home.explore",
        ),
        Binding(
            "r",
            "review",
            "Review",
            show=False,
            tooltip="review the highlighted sample (or filter) job one question at a time: 1-9 choose its "
            "training path, n none is good enough, backspace undoes",
            id="home.review",
        ),
        Binding(
            "R",
            "app.results",
            "Results",
            tooltip="the paper's Table II across runs and per-question predictions",
            id="home.results",
        ),
    ]

    class Loaded(Message):
        def __init__(self, snapshot: HomeSnapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

    # What this screen asks the app to do; the app handles them (``on_home_screen_open_job``, ...).
    class OpenJob(Message):
        """Open a job's own view; ``also``: the marked jobs (training runs are overlaid)."""

        def __init__(self, job_id: int, kind: str, also: list[int]) -> None:
            super().__init__()
            self.job_id, self.kind, self.also = job_id, kind, also

    class OpenReview(Message):
        """The review screen (one question at a time) of this sample or filter job."""

        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    class OpenExplorer(Message):
        """The filter explorer of this sample or filter job."""

        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    class OpenMonitor(Message):
        """The training monitor of these jobs, overlaid."""

        def __init__(self, job_ids: list[int]) -> None:
            super().__init__()
            self.job_ids = job_ids

    class CancelJob(Message):
        """Ask (after a confirmation) this job to stop."""

        def __init__(self, job: JobInfo) -> None:
            super().__init__()
            self.job = job

    class ShowError(Message):
        """This job's error in full."""

        def __init__(self, job: JobInfo) -> None:
            super().__init__()
            self.job = job

    class ShowLaunchLog(Message):
        """The log of the newest job process this app started."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: HomeSnapshot | None = None
        self.marked: set[int] = set()
        self.loaded = False

    @property
    def jobs(self) -> list[JobInfo]:
        return self.snapshot.jobs if self.snapshot is not None else []

    @property
    def datasets(self) -> list[dict]:
        return self.snapshot.datasets if self.snapshot is not None else []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="home"):
            yield Static("", id="welcome", markup=False)
            yield Label("Jobs", classes="section-title")
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            yield Label("Job processes started by this app", classes="section-title", id="launches-title")
            yield DataTable(id="launches", cursor_type="row", zebra_stripes=True)
            yield Label("Datasets", classes="section-title")
            yield DataTable(id="datasets", cursor_type="row", zebra_stripes=True)
            yield Label("Models", classes="section-title")
            yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
            yield Label("Checkpoints", classes="section-title")
            yield DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "sert-tui"
        self._mark_column = self.query_one("#jobs", DataTable).add_columns(
            "", "id", "kind", "status", "label", "dataset", "progress", "started", "finished", "message"
        )[0]
        self.query_one("#launches", DataTable).add_columns("pid", "stages", "state", "config", "last line")
        self.query_one("#datasets", DataTable).add_columns("name", "task", "answers", "source", "train", "test")
        self.query_one("#models", DataTable).add_columns("name", "source", "path")
        self.query_one("#checkpoints", DataTable).add_columns("job", "step", "final", "path")
        self.query_one("#jobs", DataTable).focus()
        self._welcome()
        # paint first: the app imports the database layer and starts the first read once the first frame is on
        # screen (SertApp._behind_first_frame); from then on the screen reads itself again every few seconds
        self.set_interval(REFRESH_SECONDS, self.reload)

    @work(thread=True, exclusive=True, group="home-reload", exit_on_error=False)
    def reload(self) -> None:
        """Read the workspace off the UI thread and post the result."""
        from db.app_queries import home_snapshot

        try:
            snapshot = home_snapshot(workspace_app(self).db)
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"could not read the workspace: {exc}", severity="error")
            return
        self.post_message(self.Loaded(snapshot))

    def on_home_screen_loaded(self, message: Loaded) -> None:
        snap = self.snapshot = message.snapshot
        launcher = workspace_app(self).launcher
        rows = []
        for j in snap.jobs:
            mark = ("●" if j.id in self.marked else "") + ("▶" if launcher.started_job(j.pid, j.host) else "")
            rows.append(
                (
                    mark,
                    str(j.id),
                    j.kind,
                    Text(j.status, style=STATUS_STYLE.get(j.status, "")),
                    j.label,
                    j.dataset,
                    j.progress,
                    _time(j.started_at),
                    _time(j.finished_at),
                    first_line(j.error) or first_line(j.message),
                )
            )
        self._fill("#jobs", rows, keys=[str(j.id) for j in snap.jobs])
        self._fill_launches()
        self._fill(
            "#datasets",
            [
                (d["name"], d["task"], d["answer_type"], d["source"], str(d["train"]), str(d["test"]))
                for d in snap.datasets
            ],
        )
        self._fill("#models", [(m["name"], m["source"], m["path"]) for m in snap.models])
        self._fill(
            "#checkpoints",
            [(str(c["job"]), str(c["step"]), "final" if c["final"] else "", c["path"]) for c in snap.checkpoints],
        )
        self._welcome()
        self.loaded = True

    def _fill_launches(self) -> None:
        launches = workspace_app(self).launcher.launches
        rows = []
        for launch in reversed(launches):
            rc = launch.returncode
            state = (
                Text("running", style="bold cyan")
                if rc is None
                else Text(f"exited {rc}", style="green" if rc == 0 else "bold red")
            )
            rows.append((str(launch.pid), "+".join(launch.stages), state, str(launch.config), launch.last_line()))
        self._fill("#launches", rows)
        visible = bool(launches)
        self.query_one("#launches", DataTable).display = visible
        self.query_one("#launches-title", Label).display = visible

    def _welcome(self) -> None:
        widget = self.query_one("#welcome", Static)
        t = Text()
        if not self.jobs and not workspace_app(self).launcher.launches:
            t.append("A fresh workspace. ", style="bold")
            t.append("Press ")
            t.append("d", style="bold reverse")
            t.append(
                " to start the embedded default: the bundled student (SmolLM2-135M-Instruct) samples its latent "
                "reasoning paths on a generated reasoning-gym syllogism dataset, the filters keep the paths whose "
                "answer is right (the selection study's best lever), it trains on the selected paths (SERT) and both "
                "models are evaluated; the results, zero-shot beside SERT, open at the end (one to three minutes on a "
                "2-core CPU). Paths appear here as they are sampled: open them with enter to curate them while they "
                "come in."
            )
            t.append(
                "\nn: a new job from a form with the paper's defaults · o: a job from a config file · ?: every key"
            )
        else:
            t.append(
                "enter opens a job · d default job · n new job · o from config · c cancel · e error · R results · "
                "? help · ctrl+p commands",
                style="dim",
            )
        widget.update(t)

    def _fill(self, selector: str, rows: list[tuple], keys: list[str] | None = None) -> None:
        table = self.query_one(selector, DataTable)
        plain = [tuple(c.plain if isinstance(c, Text) else str(c) for c in row) for row in rows]
        current = [
            tuple(c.plain if isinstance(c, Text) else str(c) for c in table.get_row_at(i))
            for i in range(table.row_count)
        ]
        if current == plain:
            return  # unchanged: keep the cursor and avoid a redraw
        cursor = table.cursor_row
        cursor_key = None
        if keys is not None and 0 <= cursor < table.row_count:
            cursor_key = table.coordinate_to_cell_key((cursor, 0)).row_key.value  # type: ignore[arg-type]
        table.clear()
        for i, row in enumerate(rows):
            table.add_row(*row, key=keys[i] if keys else None)
        if rows:
            index = min(cursor, len(rows) - 1)
            if cursor_key is not None and keys and cursor_key in keys:
                index = keys.index(cursor_key)  # the same job stays highlighted when a new one appears
            table.move_cursor(row=index)

    # -- the highlighted job ---------------------------------------------------------------------------
    def current_job(self) -> JobInfo | None:
        table = self.query_one("#jobs", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return next((j for j in self.jobs if str(j.id) == key), None)

    def select_job(self, job_id: int) -> None:
        table = self.query_one("#jobs", DataTable)
        table.move_cursor(row=table.get_row_index(str(job_id)))

    @on(DataTable.RowSelected, "#jobs")
    def _job_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open_job()

    def action_open_job(self) -> None:
        job = self.current_job()
        if job is None:
            self.notify("no job yet: d starts the default job")
            return
        self.post_message(self.OpenJob(job.id, job.kind, sorted(self.marked)))

    def action_explore(self) -> None:
        from db.vocabulary import FILTER, SAMPLE

        job = self.current_job()
        if job is None:
            return
        if job.kind not in (SAMPLE, FILTER):
            self.notify(f"job {job.id} is a {job.kind} job: the filter explorer opens a sample or filter job")
            return
        self.post_message(self.OpenExplorer(job.id))

    def action_review(self) -> None:
        from db.vocabulary import FILTER, SAMPLE

        job = self.current_job()
        if job is None:
            return
        if job.kind not in (SAMPLE, FILTER):
            self.notify(f"job {job.id} is a {job.kind} job: the review screen opens a sample or filter job")
            return
        self.post_message(self.OpenReview(job.id))

    def action_cancel_job(self) -> None:
        job = self.current_job()
        if job is not None:
            self.post_message(self.CancelJob(job))

    def action_show_error(self) -> None:
        job = self.current_job()
        if job is not None:
            self.post_message(self.ShowError(job))

    def action_show_log(self) -> None:
        self.post_message(self.ShowLaunchLog())

    def action_mark(self) -> None:
        job = self.current_job()
        if job is None:
            return
        self.marked ^= {job.id}
        started = workspace_app(self).launcher.started_job(job.pid, job.host)
        mark = ("●" if job.id in self.marked else "") + ("▶" if started else "")
        self.query_one("#jobs", DataTable).update_cell(str(job.id), self._mark_column, mark)

    def action_monitor(self) -> None:
        job = self.current_job()
        ids = sorted(self.marked | ({job.id} if job is not None else set()))
        if ids:
            self.post_message(self.OpenMonitor(ids))
