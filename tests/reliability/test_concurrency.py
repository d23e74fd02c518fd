"""Three processes on one workspace at once: a real sampling job (``sert-tui run --stage sample``) writing
paths, a second process reading reports in a loop (``report filters``, ``paths list``, ``jobs list`` through
the real CLI code), and the app (Pilot) where a person accepts and rejects paths at full speed.

Nothing may surface "database is locked" (or any other error) to the person or to the commands, and every
decision the app made is in the workspace at the end: the decided rows in the database are exactly the
decisions the app sent, each with its last value.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sert_tui.app import SertApp
from sert_tui.screens.paths import PathsScreen
from tests.reliability import stats
from tests.reliability.conftest import write_config
from tests.reliability.harness import ROOT, child_env, copy_workspace, job_of_pid, launch, log_tail, query
from tests.test_app_helpers import anyio_backend, make_dataset, make_sample_job, wait_for  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.model]

READER = r"""
import contextlib, io, json, os, sys, time, traceback
from pathlib import Path
from sert_tui.cli import main

db, stop, out, job = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
commands = [
    ("report filters", ["report", "filters", "--job", job, "--json"]),
    ("paths list", ["paths", "list", "--job", job, "--json"]),
    ("jobs list", ["jobs", "list", "--json"]),
]
calls = {name: 0 for name, _ in commands}
failures = []
parent, deadline = os.getppid(), time.monotonic() + 900
while not stop.exists() and os.getppid() == parent and time.monotonic() < deadline:  # never outlive the test
    for name, args in commands:
        got, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(got), contextlib.redirect_stderr(err):
                code = main(["--db", db, *args])
            json.loads(got.getvalue())  # a whole, valid answer
        except BaseException:
            code = -1
            err.write(traceback.format_exc())
        calls[name] += 1
        if code != 0 or err.getvalue().strip():
            failures.append([name, code, err.getvalue()[-800:]])
out.write_text(json.dumps({"calls": calls, "failures": failures}))
"""


def record_notifications(app: SertApp) -> list[tuple[str, str]]:
    """What the real app shows the person in notifications, remembered as (message, severity)."""
    notes: list[tuple[str, str]] = []
    notify = app.notify

    def recording(message, *args, **kwargs):
        notes.append((str(message), str(kwargs.get("severity", "information"))))
        return notify(message, *args, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    return notes


async def test_app_decides_at_full_speed_while_a_job_writes_and_reports_read(
    sqa_template, tmp_path: Path, heavy: bool
) -> None:
    from db.session import open_workspace

    presses = 800 if heavy else 200
    db = copy_workspace(sqa_template, tmp_path / "w.db")
    engine = open_workspace(db)
    dataset = make_dataset(engine, n_train=presses // 25 + 4, n_test=1)
    curated = make_sample_job(engine, dataset, n_questions=presses // 25 + 4)  # paths a person curates
    engine.dispose()

    # 1. a real sampling job, writing a question's paths every few seconds
    config = write_config(tmp_path / "sample.toml", data={"train_limit": 8 if heavy else 4})
    job_log = tmp_path / "sample.log"
    sampler = launch(db, ["run", str(config), "--stage", "sample"], job_log)
    deadline = time.monotonic() + 300
    while (job_of_pid(db, sampler.pid) or (0, "", ""))[2] != "running":
        assert sampler.poll() is None, log_tail(job_log)
        assert time.monotonic() < deadline, "the sampling job did not start"
        time.sleep(0.1)

    # 2. a second process reading reports in a loop
    stop, result = tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(stop), str(result), str(curated)],
        cwd=str(ROOT),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "reader.log").open("wb"),
    )

    # 3. the app: accept / reject as fast as keys go, until the job has written while we decided
    sent: dict[int, str | None] = {}
    rng = random.Random(7)
    app = SertApp(db)
    notes = record_notifications(app)
    n = 0
    try:
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, timeout=60, what="home")
            writer = app.decision_writer
            submit = writer.submit

            def recording_submit(changes):
                for pid, decision in changes:
                    sent[pid] = decision
                return submit(changes)

            writer.submit = recording_submit  # type: ignore[method-assign]
            screen = PathsScreen(curated, page_size=100)
            await app.push_screen(screen)
            await wait_for(pilot, lambda: screen.loaded.is_set(), timeout=60, what="first page")
            paths_before = query(db, "SELECT COUNT(*) FROM paths")[0][0]
            t0 = time.monotonic()
            while n < presses or (sampler.poll() is None and time.monotonic() - t0 < 240):
                await pilot.press(rng.choice("ax"))
                n += 1
                if n >= presses:
                    await pilot.pause(0.05)  # keep deciding (re-deciding the last page) while the job still writes
            writer.flush()
            await pilot.pause(0.2)
            paths_during = query(db, "SELECT COUNT(*) FROM paths")[0][0] - paths_before
    finally:
        stop.touch()
        for proc, timeout in ((reader, 120), (sampler, 600)):
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # nothing surfaced to the person, the reader, or the job
    errors = [(m, s) for m, s in notes if s == "error" or "locked" in m.lower()]
    assert errors == [], errors
    report = json.loads(result.read_text())
    assert report["failures"] == [], report["failures"][:3]
    assert sum(report["calls"].values()) >= 6, report
    assert sampler.returncode == 0, log_tail(job_log)
    assert "locked" not in job_log.read_text().lower()
    assert paths_during > 0, "the sampling job wrote nothing while the app was deciding"

    # every decision the app made is in the workspace, with its last value
    in_db = dict(query(db, "SELECT id, decision FROM paths WHERE job_id = ? AND decision IS NOT NULL", (curated,)))
    expected = {pid: d for pid, d in sent.items() if d is not None}
    lost = len(set(expected) - set(in_db)) + sum(in_db.get(pid) != d for pid, d in expected.items() if pid in in_db)
    stats.lost["concurrency decisions"] += lost
    stats.decisions["app, concurrent with a sampling job"] += len(sent)
    assert in_db == expected
    assert len(expected) >= presses // 2  # distinct paths (a press while the next page loads re-decides)
    print(
        f"{n} key presses, {len(expected)} paths decided, {paths_during} paths sampled meanwhile, "
        f"reader calls {report['calls']}"
    )
