"""Review speed and coverage on the paths screen's counts, and ``decided_at`` in ``paths list --json``."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import select

from db.app_queries import REVIEW_WINDOW_S, path_counts
from db.models import Path as PathRow
from db.models import utcnow
from db.paths_repo import set_decision
from db.session import session_scope
from engine.filtering.coverage import coverage
from sert_tui.cli import main
from sert_tui.screens.paths import review_line
from tests.test_app_helpers import make_dataset, make_sample_job


def test_review_speed_counts_recent_decisions_only(engine, db_path, capsys):
    job = make_sample_job(engine, make_dataset(engine), n_questions=2, per_question=5)
    with session_scope(engine) as s:
        ids = s.exec(select(PathRow.id).where(PathRow.job_id == job).order_by(PathRow.id)).all()
        old = utcnow() - timedelta(seconds=REVIEW_WINDOW_S + 60)
        set_decision(s, ids[0], "accepted", at=old)  # before the window
        for pid in ids[1:4]:
            set_decision(s, pid, "rejected")
        set_decision(s, ids[4], "accepted")
    with engine.connect() as conn:
        c = path_counts(conn, job)
        c.coverage = coverage(conn, job)
    assert c.recent_decisions == 4
    line = review_line(c)
    assert line.startswith(f"review: {4 / (REVIEW_WINDOW_S / 60):.1f} decisions/min")
    assert f"{100 * c.accepted / c.training_set:.0f}% of the training set accepted by hand" in line
    assert "a correct path:" in line and "after the filters" in line

    assert main(["--db", str(db_path), "paths", "list", "--job", str(job), "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[ids[0]]["decided_at"].startswith(old.isoformat()[:16])
    assert rows[ids[4]]["decided_at"] is not None and rows[ids[5]]["decided_at"] is None
