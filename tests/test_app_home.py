"""Home: the workspace tables, opening jobs, starting and cancelling jobs, errors, and quitting safely.

Job processes here are real: the app starts ``sert-tui``/``python -m engine.pipeline.processes`` subprocesses, and the
"headless" job of another process is a real process too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlmodel import select

from db.models import Job
from db.session import session_scope
from db.vocabulary import DEFAULT_STAGES
from engine.jobs import create_job
from engine.pipeline.processes import default_config_path, logs_dir
from sert_tui.app import SertApp
from sert_tui.screens.home import HomeScreen
from sert_tui.screens.modals import ConfirmScreen, NewJobScreen, QuitScreen, TextScreen
from sert_tui.screens.monitor import MonitorScreen
from sert_tui.screens.paths import PathsScreen
from sert_tui.screens.results import ResultsScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    make_dataset,
    make_sample_job,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio
SIZE = (180, 50)


async def home_ready(app: SertApp, pilot) -> HomeScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded, what="home")
    return app.screen  # type: ignore[return-value]


def set_job(engine, job_id: int, **values) -> None:
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None
        for key, value in values.items():
            setattr(job, key, value)


def job_row(engine, job_id: int) -> Job:
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def test_tables_show_the_workspace_and_enter_opens_each_kind_of_job(engine, db_path):
    dataset = make_dataset(engine)
    sample = make_sample_job(engine, dataset, n_questions=1)
    train = create_job(engine, "self-train", {}, dataset_id=dataset, parent_id=sample).id
    evaluation = create_job(engine, "eval", {}, dataset_id=dataset).id
    set_job(engine, train, status="running", progress_done=3, progress_total=12)
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        home = await home_ready(app, pilot)
        text = screen_text(app)
        assert "arith | basic_arithmetic | number | generated | 4 | 3" in text
        assert f"| {train} | self-train | running |" in text and "3/12 (25%)" in text
        assert f"| {sample} | sample | completed | test | arith | 1/1 (100%)" in text
        for job_id, screen_type in ((evaluation, ResultsScreen), (train, MonitorScreen), (sample, PathsScreen)):
            home.select_job(job_id)
            await pilot.press("enter")
            await wait_for(pilot, lambda t=screen_type: isinstance(app.screen, t), what=screen_type.__name__)
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))


async def test_fresh_workspace_offers_the_default_job_and_quit_can_cancel_it(db_path):
    app = SertApp(db_path)
    async with app.run_test(size=SIZE) as pilot:
        await home_ready(app, pilot)
        assert "A fresh workspace. Press d to start the embedded default" in screen_text(app)
        await pilot.press("d")
        assert len(app.launcher.launches) == 1
        launch = app.launcher.launches[0]
        assert launch.running and launch.stages == DEFAULT_STAGES and launch.default
        config = default_config_path(db_path)
        assert launch.config == config and 'model = "default"' in config.read_text()
        assert launch.log.parent == logs_dir(db_path)
        stages = "+".join(DEFAULT_STAGES)
        await wait_for(pilot, lambda: f"{stages} | running" in screen_text(app), what="launch row")
        await pilot.press("d")  # a second press does not start a second copy
        assert len(app.launcher.launches) == 1
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="quit dialog")
        assert "still run" in screen_text(app)
        await pilot.press("c")  # cancel them and quit
    try:
        launch.process.wait(120)  # the job process ends (interrupted or cancelled), it does not linger
    finally:
        stop(launch.process)
    from db.session import open_workspace

    eng = open_workspace(db_path)
    with session_scope(eng) as s:
        statuses = [j.status for j in s.exec(select(Job)).all()]
    eng.dispose()
    assert all(status in ("cancelled", "failed", "completed") for status in statuses), statuses


async def test_quit_can_leave_started_jobs_running(engine, db_path):
    make_dataset(engine)
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await home_ready(app, pilot)
        config = db_path.with_name("wait.toml")
        config.write_text('[data]\ndataset = "arith"\ntrain_limit = 1\n[sampling]\nmax_new_tokens = 8\n')
        app.start(config, ["sample"])
        launch = app.launcher.launches[0]
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("l")
    try:
        # The app is gone; the process it started was neither killed nor asked to stop.
        assert launch.process.poll() is None
        with session_scope(engine) as s:
            assert not any(j.cancel_requested for j in s.exec(select(Job)).all())
    finally:
        stop(launch.process)


async def test_headless_job_is_never_touched_on_quit_and_cancel_asks_first(engine, db_path):
    dataset = make_dataset(engine)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        job = create_job(engine, "sample", {}, dataset_id=dataset).id
        set_job(engine, job, status="running", pid=worker.pid, host=os.uname().nodename)
        app = SertApp(db_path, engine=engine)
        async with app.run_test(size=SIZE) as pilot:
            home = await home_ready(app, pilot)
            home.select_job(job)
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "running headless (not started by this app)" in screen_text(app)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
            assert job_row(engine, job).cancel_requested is False
            await pilot.press("q")  # nothing started by this app: quits at once
            await wait_for(pilot, lambda: not app.is_running, what="exit")
        assert worker.poll() is None  # the headless worker still runs
        assert job_row(engine, job).cancel_requested is False and job_row(engine, job).status == "running"
        app = SertApp(db_path, engine=engine)
        async with app.run_test(size=SIZE) as pilot:
            home = await home_ready(app, pilot)
            home.select_job(job)
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: job_row(engine, job).cancel_requested, what="cancel request")
    finally:
        stop(worker)


async def test_error_of_a_failed_job_in_full(engine, db_path):
    dataset = make_dataset(engine)
    job = create_job(engine, "sample", {}, dataset_id=dataset).id
    error = "RuntimeError: out of memory\n" + "\n".join(f"  frame {i}: in sample_batch" for i in range(40))
    set_job(engine, job, status="failed", error=error)
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        home = await home_ready(app, pilot)
        assert "RuntimeError: out of memory" in screen_text(app)  # first line in the table
        home.select_job(job)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        assert "frame 39: in sample_batch" in screen_text(app)  # the whole error, not its first line
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))


async def test_new_job_form_writes_a_config_and_starts_it_and_a_failure_is_visible(engine, db_path):
    make_dataset(engine)
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await home_ready(app, pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewJobScreen))
        form = app.screen
        from textual.widgets import Input, Select

        form.query_one("#form-stage", Select).value = "filter"
        form.query_one("#form-train-limit", Input).value = "2"
        form.query_one("#form-max-new-tokens", Input).value = "16"
        await pilot.click("#start")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
        launch = app.launcher.launches[0]
        assert launch.stages == ("filter",)
        text = launch.config.read_text()
        assert 'dataset = "arith"' in text and "train_limit = 2" in text and "max_new_tokens = 16" in text
        # The filter stage needs a finished sample job: the process fails with one clear line, shown here.
        launch.process.wait(120)
        assert launch.returncode == 2
        await wait_for(pilot, lambda: "exited 2" in screen_text(app), what="failed launch row")
        assert "no completed sample job" in screen_text(app)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        assert "error: no completed sample job" in screen_text(app)


async def test_start_from_a_config_file_refuses_a_bad_file(engine, db_path, tmp_path):
    make_dataset(engine)
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling]\ntop_k = 0\n")
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await home_ready(app, pilot)
        await pilot.press("o")
        from textual.widgets import Input

        from sert_tui.screens.modals import ConfigFileScreen

        await wait_for(pilot, lambda: isinstance(app.screen, ConfigFileScreen))
        app.screen.query_one("#config-path", Input).value = str(bad)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "sampling.top_k" in screen_text(app), what="config error")
        assert isinstance(app.screen, ConfigFileScreen) and not app.launcher.launches
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))


def test_a_job_process_takes_the_apps_interrupt_even_when_the_app_ignores_sigint(tmp_path):
    """An app started with SIGINT ignored (``cmd &`` in a script, a test runner's worker) passes that on to the job
    processes it starts, and Python then turns no SIGINT into KeyboardInterrupt: the app's interrupt
    (``Launch.interrupt``, quit's "cancel") was lost and the job ran on. The launcher's environment makes the job
    process take it, first thing at its start (``take_interrupts``)."""
    import time

    from engine.pipeline.processes import CHECKOUT, LAUNCHED_ENV, job_environment

    child = (
        "import time; from engine.pipeline.processes import take_interrupts; take_interrupts(); "
        "print('ready', flush=True); time.sleep(120)"
    )
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what the children of such an app inherit
    try:
        procs = {}
        for name, env in (("launched", job_environment()), ("plain", {**job_environment(), LAUNCHED_ENV: "0"})):
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", child], cwd=CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        for proc in procs.values():
            assert proc.stdout.readline() == b"ready\n"
            proc.send_signal(signal.SIGINT)
        _, err = procs["launched"].communicate(timeout=60)
        assert procs["launched"].returncode == -signal.SIGINT and b"KeyboardInterrupt" in err
        time.sleep(0.5)
        assert procs["plain"].poll() is None  # without it the signal is ignored: the bug this guards against
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
