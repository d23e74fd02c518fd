"""Training monitor: live curves from the metrics table, stats, log lines, and several runs overlaid."""

from __future__ import annotations

import pytest

from engine.jobs import JobContext, create_job
from sert_tui.app import SertApp
from sert_tui.screens.home import HomeScreen
from sert_tui.screens.monitor import MonitorScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    make_dataset,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio
SIZE = (180, 50)


def training_run(engine, dataset: int, kind: str, steps: int, lr: float = 3e-4) -> JobContext:
    """A training job that reports as the training engine does: start, progress, metrics, log lines."""
    job = create_job(engine, kind, {"train": {"lr": lr}}, dataset_id=dataset, label=kind)
    ctx = JobContext(engine, job.id)  # type: ignore[arg-type]
    ctx.start()
    ctx.log(f"{kind}: 24 samples, batch 8")
    for step in range(1, steps + 1):
        ctx.metrics(
            step, {"loss": 3.0 / step, "lr": lr * (1 - step / 50), "tokens_per_s": 150.0 + step, "epoch": step / 3}
        )
        ctx.progress(step, 12, "steps", force=True)
    return ctx


async def test_live_curves_stats_and_log(engine, db_path):
    dataset = make_dataset(engine)
    ctx = training_run(engine, dataset, "self-train", 3)
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        await pilot.press("enter")  # the newest job: the training run
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.polls >= 1)
        monitor = app.screen
        assert monitor.plotted["loss"] == [(f"{ctx.job_id} self-train", [1, 2, 3], [3.0, 1.5, 1.0])]
        assert [round(v, 8) for v in monitor.plotted["lr"][0][2]] == [round(3e-4 * (1 - s / 50), 8) for s in (1, 2, 3)]
        text = screen_text(app)
        assert f"job {ctx.job_id} self-train 'self-train' · running · step 3 · 3/12 (25%)" in text
        assert "epoch 1 · tokens/s 153" in text and "ETA" in text and "RSS" in text  # this process runs the job
        assert "self-train: 24 samples, batch 8" in text
        # The engine goes on: new steps and a log line appear without any key press.
        for step in (4, 5):
            ctx.metrics(step, {"loss": 3.0 / step, "lr": 1e-4, "tokens_per_s": 160.0, "epoch": step / 3})
        ctx.log("checkpoint saved at step 5")
        await wait_for(pilot, lambda: monitor.plotted["loss"][0][1] == [1, 2, 3, 4, 5], what="new steps")
        await wait_for(pilot, lambda: "checkpoint saved at step 5" in screen_text(app), what="new log line")
        ctx.finish("completed")
        await wait_for(pilot, lambda: "· completed" in screen_text(app), what="status")
        await pilot.press("y")  # log-scale loss axis
        assert monitor.log_scale and monitor.plotted["loss"][0][2][-1] == pytest.approx(0.6)


async def test_runs_overlaid_for_comparison(engine, db_path):
    dataset = make_dataset(engine)
    a = training_run(engine, dataset, "self-train", 4)
    b = training_run(engine, dataset, "finetune", 2, lr=1e-4)
    c = training_run(engine, dataset, "distill", 3)
    for ctx in (a, b, c):
        ctx.finish("completed")
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        home = app.screen
        home.select_job(b.job_id)
        await pilot.press("m")  # mark the finetune run
        assert "●" in screen_text(app)
        home.select_job(a.job_id)
        await pilot.press("enter")  # the self-train run, with the marked run overlaid
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.polls >= 1)
        monitor = app.screen
        assert [label for label, _, _ in monitor.plotted["loss"]] == [f"{a.job_id} self-train", f"{b.job_id} finetune"]
        await pilot.press("o")  # every training run of the workspace
        await wait_for(pilot, lambda: len(monitor.plotted["loss"]) == 3, what="all runs")
        assert {label for label, _, _ in monitor.plotted["loss"]} == {
            f"{a.job_id} self-train",
            f"{b.job_id} finetune",
            f"{c.job_id} distill",
        }
        assert f"job {c.job_id} distill" in screen_text(app)
        await pilot.press("o")  # back to the chosen runs
        await wait_for(pilot, lambda: len(monitor.plotted["loss"]) == 2, what="chosen runs")


@pytest.mark.model
@pytest.mark.slow
async def test_monitor_follows_a_real_training_process(engine, db_path):
    """The real engine: the app starts `sert-tui run CONFIG --stage finetune` (the bundled student, 2 steps) and
    the monitor draws the loss the training process writes."""
    from sqlmodel import select

    from db.models import Job, Metric
    from db.session import session_scope

    make_dataset(engine, n_train=4)
    config = db_path.with_name("finetune.toml")
    config.write_text(
        '[student]\ndevice = "cpu"\n[data]\ndataset = "arith"\ntrain_limit = 4\n'
        '[train]\nmax_steps = 3\nbatch_size = 2\nmax_length = 64\nbf16 = "off"\n'
    )
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        app.start(config, ["finetune"])
        launch = app.launcher.launches[0]

        def job_id() -> int | None:
            with session_scope(engine) as s:
                return s.exec(select(Job.id).where(Job.kind == "finetune")).first()

        await wait_for(pilot, lambda: job_id() is not None or not launch.running, timeout=240, what="the job row")
        assert job_id() is not None, launch.log_text()
        home = app.screen
        await wait_for(pilot, lambda: any(j.id == job_id() for j in home.jobs), what="job listed")
        home.select_job(job_id())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        await wait_for(pilot, lambda: not launch.running, timeout=300, what="training to finish")
        assert launch.returncode == 0, launch.log_text()
        with session_scope(engine) as s:
            losses = {m.step: m.value for m in s.exec(select(Metric).where(Metric.name == "loss")).all()}
        steps = sorted(losses)
        assert len(steps) >= 2  # 4 questions, batch 2: one epoch is 2 steps (max_steps 3 caps nothing here)
        n = len(steps)
        await wait_for(pilot, lambda: monitor.plotted["loss"] and len(monitor.plotted["loss"][0][1]) == n, timeout=20)
        label, xs, ys = monitor.plotted["loss"][0]
        assert label == f"{job_id()} finetune" and xs == steps and ys == [losses[s] for s in steps]
        await wait_for(pilot, lambda: "· completed" in screen_text(app), timeout=20, what="completed status")
        text = screen_text(app)
        assert "tokens/s" in text and f"step {steps[-1]}" in text and "checkpoint" in text
