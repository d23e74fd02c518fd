"""``report filters --set``: the counts other thresholds would give, counted by hand, and nothing written."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlmodel import select

from db.models import Path, Question
from db.session import session_scope
from engine.jobs import create_job
from sert_tui.cli import main

LONG = "Bats are mammals that fly at night, and they use echolocation to find insects in the dark sky. So yes."


@pytest.fixture
def sample_job(engine, sqa):
    """Two questions; per path (tokens, rep-2, perplexity, correct)."""
    plan = [
        [(30, 0.05, 6.0, True), (30, 0.10, 3.0, True), (10, 0.05, 8.0, False)],
        [(40, 0.30, 7.0, False), (40, 0.15, 4.0, True), (40, 0.12, 2.5, False)],
    ]
    job = create_job(engine, "sample", {"filters": {}}, dataset_id=sqa.id)
    with session_scope(engine) as s:
        qids = s.exec(select(Question.id).where(Question.dataset_id == sqa.id).order_by(Question.id).limit(2)).all()
        for qid, paths in zip(qids, plan, strict=True):
            for i, (tokens, rep2, ppl, correct) in enumerate(paths):
                text = LONG if correct else LONG.replace("So yes.", "So no.")
                s.add(
                    Path(job_id=job.id, question_id=qid, branch=i, text=text, tokens=tokens, rep2=rep2, perplexity=ppl)
                )
        for qid, gold in ((qids[0], "yes"), (qids[1], "yes")):
            s.get(Question, qid).answer = gold
    return job.id


def _digest(db) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def test_what_if_counts_by_hand_and_writes_nothing(db_path, engine, sample_job, capsys):
    engine.dispose()
    before = _digest(db_path)
    argv = ["--db", str(db_path), "report", "filters", "--job", str(sample_job), "--json"]
    assert main([*argv, "--set", "filters.min_perplexity=5", "--set", "filters.max_rep2=0.2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["questions"], out["paths"], out["correct"]) == (2, 6, 3)
    steps = {s["rule"]: s for s in out["rules"]}
    assert steps["length"]["removed"] == 1  # the 10-token path
    assert steps["repetition"]["removed"] == 1  # rep-2 0.30
    # perplexity >= 5 keeps only question 1's first path; the rest of the survivors (3.0, 4.0, 2.5) go
    assert steps["perplexity"]["removed"] == 3 and steps["perplexity"]["questions_left"] == 1
    assert steps["perplexity"]["questions_removed"] == 1  # question 2 keeps no path
    assert [s["questions_removed"] for s in out["rules"][:3]] == [0, 0, 0]
    assert (out["survivors"], out["survivors_correct"], out["selected"], out["selected_correct"]) == (1, 1, 1, 1)
    assert out["removed"] == {s["rule"]: s["removed"] for s in out["rules"]}

    assert main([*argv, "--set", "filters.min_perplexity=2", "--set", "filters.max_rep2=0.2"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert loose["survivors"] == 4 and loose["selected"] == 2 and loose["selected_correct"] == 1
    assert _digest(db_path) == before  # nothing written: not the file
    with session_scope(engine) as s:  # and not the rows (a write could sit in the -wal file)
        rows = s.exec(select(Path.verdicts, Path.passed, Path.selected).where(Path.job_id == sample_job)).all()
    assert rows and all(v == {} and p is None and not sel for v, p, sel in rows)


def test_what_if_refuses_bad_settings(db_path, sample_job, capsys):
    argv = ["--db", str(db_path), "report", "filters", "--job", str(sample_job)]
    assert main([*argv, "--set", "filters.nope=1"]) == 2
    assert "--set filters.nope: no such setting" in capsys.readouterr().err
    assert main([*argv, "--set", "min_perplexity=1"]) == 2
    assert "expected filters.KEY=VALUE" in capsys.readouterr().err
    assert main([*argv, "--set", "filters.min_perplexity=high"]) == 2
    assert capsys.readouterr().err.startswith("error: --set filters.min_perplexity")
    assert main([*argv, "--set", "filters.min_perplexity=4"]) == 0
    assert "nothing written" in capsys.readouterr().out
