"""``report coverage``: latent reasoning shares of a sample job, counted by hand on rows of a real workspace."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from db.models import Evaluation, Path, Question
from db.session import session_scope
from engine.jobs import create_job
from sert_tui.cli import main


@pytest.fixture
def sampled(engine, sqa):
    """Four questions, three paths each: (correct, passed, selected) per path."""
    plan = [
        [(True, True, True), (False, False, False), (True, False, False)],  # all three shares count it
        [(True, False, False), (False, True, True), (False, False, False)],  # correct only before the filters
        [(False, True, False), (True, True, True), (False, False, False)],  # correct survivor, selected
        [(False, False, False), (None, True, True), (False, False, False)],  # nothing correct (None: no answer)
    ]
    sample = create_job(engine, "sample", {"student": {"model": "default"}}, dataset_id=sqa.id)
    filt = create_job(engine, "filter", {}, dataset_id=sqa.id, parent_id=sample.id)
    with session_scope(engine) as s:
        qids = s.exec(select(Question.id).where(Question.dataset_id == sqa.id).order_by(Question.id).limit(4)).all()
        for qid, paths in zip(qids, plan, strict=True):
            for i, (correct, passed, selected) in enumerate(paths):
                s.add(
                    Path(
                        job_id=sample.id,
                        question_id=qid,
                        branch=i,
                        text=f"path {i}",
                        correct=correct,
                        passed=passed,
                        selected=selected,
                    )
                )
    return sample.id, filt.id


def test_coverage_shares_by_hand(db_path, engine, sqa, sampled, capsys):
    sample_id, filter_id = sampled
    assert main(["--db", str(db_path), "report", "coverage", "--job", str(sample_id), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["questions"] == 4
    assert out["any_correct"] == pytest.approx(3 / 4)
    assert out["any_correct_filtered"] == pytest.approx(2 / 4)
    assert out["selected_correct"] == pytest.approx(2 / 4)
    assert out["zero_shot_acc"] is None

    eval_job = create_job(engine, "eval", {"student": {"model": "default"}}, dataset_id=sqa.id)
    with session_scope(engine) as s:
        s.add(Evaluation(job_id=eval_job.id, label="zero-shot", dataset_id=sqa.id, n=10, acc=0.1))
    # a filter job reports on its sample job's paths
    assert main(["--db", str(db_path), "report", "coverage", "--job", str(filter_id), "--json"]) == 0
    via_filter = json.loads(capsys.readouterr().out)
    assert via_filter["sample_job"] == sample_id and via_filter["zero_shot_acc"] == pytest.approx(0.1)
    assert main(["--db", str(db_path), "report", "coverage", "--job", str(sample_id)]) == 0
    assert "75.0%" in capsys.readouterr().out


def test_coverage_before_filtering_and_bad_jobs(db_path, engine, sqa, capsys):
    job = create_job(engine, "sample", {}, dataset_id=sqa.id)
    with session_scope(engine) as s:
        qid = s.exec(select(Question.id).limit(1)).one()
        s.add(Path(job_id=job.id, question_id=qid, text="x", correct=True))
    assert main(["--db", str(db_path), "report", "coverage", "--job", str(job.id), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["any_correct"] == 1.0 and out["any_correct_filtered"] is None and out["selected_correct"] is None
    assert main(["--db", str(db_path), "report", "coverage", "--job", "999"]) == 2
    assert capsys.readouterr().err.startswith("error: no job with id 999")
    other = create_job(engine, "eval", {}, dataset_id=sqa.id)
    assert main(["--db", str(db_path), "report", "coverage", "--job", str(other.id)]) == 2
