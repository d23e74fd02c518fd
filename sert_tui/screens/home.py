"""Home: the workspace's datasets, models, jobs and checkpoints, refreshed while jobs run."""

from __future__ import annotations

from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

REFRESH_SECONDS = 1.0


@dataclass
class Snapshot:
    datasets: list[dict]
    models: list[dict]
    jobs: list[dict]
    checkpoints: list[dict]


def read_snapshot(engine) -> Snapshot:
    """Everything the home screen shows, read in one short transaction."""
    from sqlmodel import select

    from db.models import Checkpoint, Job, Model
    from db.queries import dataset_counts
    from db.session import session_scope

    with session_scope(engine) as s:
        datasets = dataset_counts(s)
        models = [{"name": m.name, "source": m.source, "path": m.local_path} for m in s.exec(select(Model)).all()]
        jobs = [
            {
                "id": j.id,
                "kind": j.kind,
                "status": j.status,
                "progress": f"{j.progress_done}/{j.progress_total}" if j.progress_total else "",
                "started": j.started_at.strftime("%m-%d %H:%M") if j.started_at else "",
                "finished": j.finished_at.strftime("%m-%d %H:%M") if j.finished_at else "",
                "message": (j.error or j.message or "").splitlines()[0] if (j.error or j.message) else "",
            }
            for j in s.exec(select(Job).order_by(Job.id.desc())).all()  # type: ignore[union-attr]
        ]
        checkpoints = [
            {"job": c.job_id, "step": c.step, "final": "yes" if c.is_final else "", "path": c.path}
            for c in s.exec(select(Checkpoint).order_by(Checkpoint.id.desc())).all()  # type: ignore[union-attr]
        ]
    return Snapshot(datasets, models, jobs, checkpoints)


class HomeScreen(Screen):
    """The first screen: what the workspace holds."""

    class Loaded(Message):
        def __init__(self, snapshot: Snapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="home"):
            yield Label("Datasets", classes="section-title")
            yield DataTable(id="datasets", cursor_type="row", zebra_stripes=True)
            yield Label("Jobs", classes="section-title")
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            yield Label("Models", classes="section-title")
            yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
            yield Label("Checkpoints", classes="section-title")
            yield DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#datasets", DataTable).add_columns("name", "task", "answers", "source", "train", "test")
        self.query_one("#jobs", DataTable).add_columns(
            "id", "kind", "status", "progress", "started", "finished", "message"
        )
        self.query_one("#models", DataTable).add_columns("name", "source", "path")
        self.query_one("#checkpoints", DataTable).add_columns("job", "step", "final", "path")
        self.reload()
        self.set_interval(REFRESH_SECONDS, self.reload)

    @work(thread=True, exclusive=True, group="home-reload")
    def reload(self) -> None:
        """Read the workspace off the UI thread and post the result."""
        self.post_message(self.Loaded(read_snapshot(self.app.db)))

    def on_home_screen_loaded(self, message: Loaded) -> None:
        snap = message.snapshot
        self._fill(
            "#datasets",
            [
                (d["name"], d["task"], d["answer_type"], d["source"], str(d["train"]), str(d["test"]))
                for d in snap.datasets
            ],
        )
        self._fill(
            "#jobs",
            [
                (str(j["id"]), j["kind"], j["status"], j["progress"], j["started"], j["finished"], j["message"])
                for j in snap.jobs
            ],
        )
        self._fill("#models", [(m["name"], m["source"], m["path"]) for m in snap.models])
        self._fill("#checkpoints", [(str(c["job"]), str(c["step"]), c["final"], c["path"]) for c in snap.checkpoints])

    def _fill(self, selector: str, rows: list[tuple[str, ...]]) -> None:
        table = self.query_one(selector, DataTable)
        if [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)] == rows:
            return  # unchanged: keep the cursor and avoid a redraw
        cursor = table.cursor_row
        table.clear()
        table.add_rows(rows)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))
