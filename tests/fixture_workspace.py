"""The fixed workspace of the app's pictures: the snapshot tests (tests/snapshots) and ``make screenshots``
(scripts/screenshots.py, the SVGs of docs/images/) build the same one and drive the same screens.

The workspace is built from rows (no model): a dataset, a sample job whose paths carry the filter's verdicts and
some decisions, the filter job, two training runs with metrics and log lines, two evaluations with predictions,
a failed job and a pending one. Every time the app shows is fixed in the rows, nothing runs on this machine, the
workspace and config paths are relative, the terminal size is fixed and animations and cursor blinking are off,
so that a picture depends on the app alone.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import textual.constants
from sqlalchemy import update
from sqlmodel import select
from textual.widgets import Input

from db.models import Checkpoint, Evaluation, Job, JobEvent, Model, Prediction
from db.models import Path as PathRow
from db.paths_repo import set_decision
from db.session import session_scope
from engine.jobs import JobContext, create_job
from sert_tui.app import SertApp
from sert_tui.screens.explorer import FilterExplorerScreen
from sert_tui.screens.home import HomeScreen
from sert_tui.screens.monitor import MonitorScreen
from sert_tui.screens.paths import PathsScreen
from sert_tui.screens.results import ResultsScreen
from sert_tui.screens.review import ReviewScreen
from tests.test_app_helpers import make_dataset, make_filter_job, make_sample_job, question_ids, wait_for

SIZE = (160, 48)
T0 = datetime(2026, 11, 22, 9, 30, 0, tzinfo=UTC)


# -- the workspace -------------------------------------------------------------------------------------------
def training_run(engine, dataset: int, kind: str, label: str, steps: int, scale: float, lr: float) -> int:
    job = create_job(engine, kind, {"train": {"lr": lr}}, dataset_id=dataset, label=label)
    ctx = JobContext(engine, job.id)  # type: ignore[arg-type]
    ctx.start()
    ctx.log(f"{kind}: 24 samples, batch 8, 2 epochs")
    for step in range(1, steps + 1):
        ctx.metrics(
            step,
            {
                "loss": scale * (2.5 / step**0.5 + 0.1),
                "lr": lr * (1 - step / (steps + 1)),
                "tokens_per_s": 300.0 + 10 * step,
                "epoch": step / (steps / 2),
            },
        )
    ctx.log(f"checkpoint saved at step {steps}")
    ctx.finish("completed")
    with session_scope(engine) as s:
        s.add(Checkpoint(job_id=job.id, step=steps, path=f"checkpoints/job-{job.id}/final", is_final=True))  # type: ignore[arg-type]
    return job.id  # type: ignore[return-value]


def evaluation(engine, dataset: int, label: str, pattern: list[bool], scores: dict) -> int:
    job = create_job(engine, "eval", {}, dataset_id=dataset, label=label).id
    qids = question_ids(engine, dataset, "test")
    with session_scope(engine) as s:
        ev = Evaluation(
            job_id=job,  # type: ignore[arg-type]
            label=label,
            model_ref="default" if label == "zero-shot" else f"checkpoints/{label}/final",
            dataset_id=dataset,
            split="test",
            n=len(qids),
            acc=sum(pattern) / len(pattern),
            fmt=0.8,
            len=38.5 if label == "zero-shot" else 44.25,
            rep=0.125,
            scores=scores,
        )
        s.add(ev)
        s.flush()
        for n, (qid, ok) in enumerate(zip(qids, pattern, strict=True)):
            s.add(
                Prediction(
                    evaluation_id=ev.id,  # type: ignore[arg-type]
                    question_id=qid,
                    output=f"{label}: first add the units, then the tens. So the answer is {n * 4 + 3 if ok else 7}.",
                    answer=str(n * 4 + 3 if ok else 7),
                    correct=ok,
                    well_formed=True,
                    tokens=20 + n,
                )
            )
        return ev.id  # type: ignore[return-value]


def fixed_display(monkeypatch, folder: Path) -> None:
    """Run in ``folder`` (the app shows relative paths), in UTC, with colours as a true-colour terminal shows
    them whatever terminal runs this. ``monkeypatch``: pytest's fixture, or a ``pytest.MonkeyPatch()``."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "truecolor")
    monkeypatch.setattr(textual.constants, "FILTERS", "")


def build_workspace(engine, sampling: bool = False) -> dict[str, int]:
    """The fixture workspace; ``sampling``: the sample job is still running (3 of the 4 training questions
    sampled), as the paths screen shows it while paths come in."""
    dataset = make_dataset(engine, "arith", n_train=4, n_test=4)
    with session_scope(engine) as s:
        s.add(Model(name="default", source="bundled", local_path="models/SmolLM2-135M-Instruct"))
    sample = make_sample_job(engine, dataset, n_questions=3, label="sample paths")
    filter_job = make_filter_job(engine, dataset, sample)
    with session_scope(engine) as s:
        ids = sorted(s.exec(select(PathRow.id).where(PathRow.job_id == sample)).all())  # type: ignore[arg-type]
        chosen = ["accepted", "rejected", "accepted", "ignored", None, "rejected"]
        for path_id, decision in zip(ids[: len(chosen)], chosen, strict=True):
            set_decision(s, path_id, decision)  # decided_at is shown nowhere
    self_train = training_run(engine, dataset, "self-train", "SERT", 12, 1.0, 3e-4)
    distill = training_run(engine, dataset, "distill", "SERT+RD", 12, 0.8, 2e-4)
    zero = evaluation(engine, dataset, "zero-shot", [True, False, False, True], {})
    sert = evaluation(engine, dataset, "SERT", [True, True, False, False], {"coherence": 6.5})
    failed = create_job(engine, "teacher", {}, dataset_id=dataset, label="teacher").id
    pending = create_job(engine, "finetune", {}, dataset_id=dataset, label="Finetune").id
    error = (
        "ConnectionError: the teacher endpoint http://127.0.0.1:8000/v1 refused the connection\n"
        "  after 3 attempts (timeout 30 s); no rationale was written."
    )
    with session_scope(engine) as s:
        jobs = s.exec(select(Job.id).order_by(Job.id)).all()  # type: ignore[arg-type]
        for n, job_id in enumerate(jobs):
            start = T0 + timedelta(minutes=10 * n)
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    created_at=start,
                    started_at=start,
                    finished_at=start + timedelta(minutes=7, seconds=30),
                    heartbeat_at=None,
                    pid=None,
                    host="",
                    message="",
                )
            )
        done = {"sample": 3, "filter": 3, "self-train": 12, "distill": 12, "eval": 4}
        for kind, n in done.items():
            s.execute(update(Job).where(Job.kind == kind).values(status="completed", progress_done=n, progress_total=n))
        failed_values = {"status": "failed", "error": error, "progress_done": 2, "progress_total": 4}
        s.execute(update(Job).where(Job.id == failed).values(**failed_values))
        s.execute(update(Job).where(Job.id == pending).values(status="pending", started_at=None, finished_at=None))
        if sampling:  # the fourth training question is not sampled yet; the filter has not run
            s.execute(
                update(Job)
                .where(Job.id == sample)
                .values(status="running", progress_done=3, progress_total=4, finished_at=None)
            )
        for n, event_id in enumerate(s.exec(select(JobEvent.id).order_by(JobEvent.id)).all()):  # type: ignore[arg-type]
            s.execute(update(JobEvent).where(JobEvent.id == event_id).values(time=T0 + timedelta(seconds=15 * n)))
    return {
        "dataset": dataset,
        "sample": sample,
        "filter": filter_job,
        "self_train": self_train,
        "distill": distill,
        "zero_eval": zero,
        "sert_eval": sert,
        "failed": failed,
        "pending": pending,
    }


def make_app(engine) -> SertApp:
    app = SertApp(Path("workspace.db"), engine=engine, config=Path("config.toml"))
    app.animation_level = "none"
    app.theme = "textual-dark"
    return app


async def home(pilot) -> HomeScreen:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded, what="home")
    return app.screen


async def steady(pilot) -> None:
    """No blinking cursor, one more round of the screen's own reads, and then the same picture twice in a row
    (a table widens its columns to its rows on a later refresh, which a loaded machine can delay)."""
    import re

    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause(0.3)
    last = None
    for _ in range(50):
        shot = re.sub(r"terminal-\d+", "terminal", pilot.app.export_screenshot())
        if shot == last:
            return
        last = shot
        await pilot.pause(0.1)


# -- the screens of the pictures (each a ``run_before`` of the snapshot tests) ----------------------------------
async def show_paths(pilot, workspace: dict[str, int]) -> None:
    await home(pilot)
    screen = PathsScreen(workspace["sample"])
    await pilot.app.push_screen(screen)
    await wait_for(pilot, lambda: screen.loads >= 1 and screen.counts.total > 0, what="paths")
    screen.table.move_cursor(5)  # a rejected path that failed the repetition rule
    await steady(pilot)


async def show_explorer(pilot, workspace: dict[str, int]) -> None:
    """The sample job's histograms (w on the home screen), the perplexity threshold moved from 5 to 7."""
    screen = await home(pilot)
    screen.select_job(workspace["sample"])
    await pilot.press("w")
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, FilterExplorerScreen) and app.screen.loads >= 1)
    explorer = app.screen
    await pilot.press("down", "down", "shift+right", "shift+right")
    await wait_for(pilot, lambda: explorer.counted_for == explorer.values, what="the recount")
    await steady(pilot)


async def show_monitor(pilot, workspace: dict[str, int]) -> None:
    """The monitor of the self-training run with the distillation run overlaid (m marks, t opens)."""
    screen = await home(pilot)
    screen.select_job(workspace["distill"])
    await pilot.press("m")  # mark the distillation run
    screen.select_job(workspace["self_train"])
    await pilot.press("t")  # the monitor of the highlighted run plus the marked one
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen) and pilot.app.screen.polls >= 1)
    monitor = pilot.app.screen
    await wait_for(pilot, lambda: len(monitor.plotted["loss"]) == 2, what="two curves")
    await steady(pilot)


async def show_review(pilot, workspace: dict[str, int]) -> None:
    """The review screen of the sample job (r on the home screen): path 2 chosen on the first question (2, then p
    back to it)."""
    screen = await home(pilot)
    screen.select_job(workspace["sample"])
    await pilot.press("r")
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.loaded.is_set(), what="queue")
    review = app.screen
    await pilot.press("2", "p")
    await wait_for(pilot, lambda: review.position == 0, what="back on the first question")
    app.decision_writer.flush()
    await steady(pilot)


async def show_results(pilot, workspace: dict[str, int]) -> None:
    await home(pilot)
    await pilot.press("R")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen) and pilot.app.screen.loaded)
    await steady(pilot)
