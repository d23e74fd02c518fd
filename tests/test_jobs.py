"""The job context's progress line: counts, rate and ETA, as the CLI, the app and the logs show it."""

from __future__ import annotations

import re
import time

from engine.jobs import JobContext, create_job


def _rate(line: str) -> float:
    return float(re.search(r", ([\d.]+) questions/s", line).group(1))


def test_progress_rate_and_eta(engine) -> None:
    job = create_job(engine, "sample", {})
    ctx = JobContext(engine, job.id)
    assert ctx.progress(0, 10, "questions", force=True).startswith("0/10 questions, 0.00 questions/s, ETA ?")
    time.sleep(0.2)
    line = ctx.progress(4, 10, "questions", force=True)
    assert line.startswith("4/10 questions, ") and 0 < _rate(line) <= 4 / 0.2 and "ETA ?" not in line


def test_a_job_done_in_its_first_report_shows_its_real_rate(engine) -> None:
    """A stage whose whole work comes before its first report (the filter: one transaction) measures its rate
    over the run, not over nothing (it used to say "0.00 questions/s, ETA ?")."""
    job = create_job(engine, "filter", {})
    ctx = JobContext(engine, job.id)
    time.sleep(0.2)
    line = ctx.progress(1500, 1500, "questions", force=True)
    assert line.startswith("1500/1500 questions, ") and 0 < _rate(line) <= 1500 / 0.2 and "ETA 0s" in line


def test_a_second_count_of_a_job_gets_its_own_rate(engine, sqa) -> None:
    """The filter stage with gold_likelihood reports paths scored, then questions filtered: the second rate is
    not computed from the first count's baseline (it read -0.65 questions/s)."""
    from engine.jobs import JobContext, create_job

    job = create_job(engine, "filter", {}, dataset_id=sqa.id)
    ctx = JobContext(engine, job.id)
    ctx.progress(64, 207, "paths scored", force=True)
    ctx.progress(207, 207, "paths scored", force=True)
    line = ctx.progress(32, 32, "questions", force=True)
    rate = float(line.split(", ")[1].split()[0])
    assert rate > 0 and "ETA 0s" in line, line
